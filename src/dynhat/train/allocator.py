"""Keeping a CPU training's resident memory near its working set.

Under bfloat16 autocast on a CPU, every matrix product of a new shape builds a oneDNN primitive, and oneDNN keeps
up to 1,024 of them with their buffers. Batches of varying shapes times SubTransformers of varying widths keep
making new ones: a training process of the tiny space grew by about 1 GB per 10 minutes, to 6-7 GB. Capping the
cache at 64 primitives (``bound_primitive_cache``) held a process flat at half the memory with no change in speed
(docs/results.md). Handing the heap's free pages back at every save (``malloc_trim``) releases what varying
shapes leave free in glibc's heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

#: oneDNN primitives kept for reuse (oneDNN's default is 1,024); a value in the environment wins.
PRIMITIVE_CACHE = 64


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_free_heap() -> bool:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``); False where there is no such call."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def bound_primitive_cache(capacity: int = PRIMITIVE_CACHE) -> None:
    """Cap oneDNN's primitive cache unless the environment sets ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``; oneDNN reads
    it when it makes its first primitive, so call this before the first matrix product."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))
