"""Keeping a CPU training's resident memory near its working set.

Batches of varying shapes make glibc's malloc raise its mmap threshold each time a large block is freed; from
then on large tensors come from the heap, which fragments and seldom shrinks, and a training process of the tiny
space grew to 6-7 GB. A fixed threshold keeps large blocks in mmap, handed back to the system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def fix_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` for this process; False where the C library has no such setting."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return False
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, nbytes))
