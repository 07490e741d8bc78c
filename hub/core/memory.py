"""Giving freed heap memory back to the operating system after the hub's large, short-lived
allocations (an array build, an upload's apply).

glibc keeps what Python frees in its arenas (one per thread that allocated) and rarely
returns it: measured on a process building four partners' arrays of 1M records six times on
threads, the anonymous memory settled at 700-830 MB with 180 MB of it live, and at 280-320 MB
with ``malloc_trim(0)`` after each round (bench/README.md, "Soak"). The soak saw each serve
process grow from 400 MB to 1.8 GB in ten minutes of uploads and overlaps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable

_lock = threading.Lock()


def _find_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim  # glibc only (musl and macOS have none)
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _find_trim()


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; False where the C library cannot
    (the process then keeps them, as before). One call at a time: it walks every arena."""
    if _TRIM is None:
        return False
    with _lock:
        _TRIM(0)
    return True
