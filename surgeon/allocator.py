"""Keep glibc's heap from holding on to freed tensor memory during a long CPU job.

PyTorch allocates CPU tensors with ``malloc``. glibc serves a block above its mmap threshold
with its own mapping, returned to the system on ``free``, but its threshold is dynamic: each
freed mapped block raises it to that block's size (up to 32 MiB), after which gradient-sized
blocks come from the heap, where the holes that a backward pass's temporaries leave are kept.
A rollback that computes the gradient of tens of millions of entries again and again then
grows step after step: on the 113M-parameter benchmark pair its peak RSS varied from 2.35x to
2.59x one fp32 model over three runs. With the threshold fixed at 1 MiB during the repair it
stayed at 2.27-2.28x over three runs (``bench/rollback.py --memory``).

:func:`bounded_heap` fixes the threshold for the duration of a block and, afterwards, returns
free heap memory and sets the threshold to 32 MiB (glibc's dynamic ceiling, where the dynamic
rule settles in tensor workloads; glibc cannot switch the dynamic rule back on). Elsewhere
than on glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number for the mmap threshold."""
DURING = 1 << 20
"""Threshold inside :func:`bounded_heap`: blocks of 1 MiB and more get their own mapping."""
AFTER = 32 << 20
"""Threshold afterwards: glibc's dynamic ceiling (``DEFAULT_MMAP_THRESHOLD_MAX``, 64-bit)."""


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None  # musl and other C libraries without glibc's malloc knobs
    return libc


def set_mmap_threshold(size: int) -> bool:
    """Fix glibc's mmap threshold at ``size`` bytes; False where that is not possible."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(size)) == 1)


def release_free_memory() -> bool:
    """Give free heap pages back to the system (``malloc_trim``); False where unavailable."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True


@contextmanager
def bounded_heap(enabled: bool = True) -> Iterator[bool]:
    """Inside the block, tensor-sized blocks are mapped on their own and unmapped when freed.
    Yields whether the setting took effect."""
    active = enabled and set_mmap_threshold(DURING)
    try:
        yield active
    finally:
        if active:
            release_free_memory()
            set_mmap_threshold(AFTER)
