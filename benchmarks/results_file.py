"""Where the benchmarks write what they measured: ``results/`` at the repository root (not tracked).

Each benchmark writes its markdown (command, date, machine, tables) to ``results/<name>.md`` and its pictures beside
it; docs/results.md holds the figures that describe dynhat today, copied from there with their command and date.
"""

from __future__ import annotations

from pathlib import Path

from dynhat.io import atomic_write_text

RESULTS = Path(__file__).resolve().parents[1] / "results"


def write_result(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (atomically, creating its folder) and say where it went."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    print(f"wrote {path}")
    return path
