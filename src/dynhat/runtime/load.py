"""Competing load: busy processes pinned to given CPUs, as other work on a shared machine; always stopped."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence


def _spin(cpus: Sequence[int] | None) -> None:  # pragma: no cover - runs in a child process
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


@contextlib.contextmanager
def background_load(count: int, cpus: Sequence[int] | None) -> Iterator[list[mp.Process]]:
    """``count`` busy processes pinned to ``cpus``; terminated (then killed) on exit, whatever happened."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_spin, args=(list(cpus) if cpus else None,), daemon=True) for _ in range(count)]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
