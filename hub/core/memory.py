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
# mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# At most this many arenas: glibc makes up to 8 per core, one per thread that allocates (the
# event loop's worker threads each got their own, and each kept its own free pages).
ARENAS = 2
# Blocks this big or bigger (numpy columns of a build, a patch, an answer) are mapped on their
# own and unmapped when freed. By default glibc raises this threshold up to 32 MB as such
# blocks are freed, after which they come from the arenas and stay there.
MMAP_THRESHOLD = 1 << 20


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _find_trim() -> Callable[[int], int] | None:
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)  # glibc only (musl and macOS have none)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _find_trim()


def tune_allocator() -> bool:
    """Cap glibc's arenas and fix its mmap threshold (see ARENAS and MMAP_THRESHOLD), for a
    long-running hub process; called once, early, before its threads start. False where the
    C library has no ``mallopt`` (nothing changes)."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, ARENAS)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; False where the C library cannot
    (the process then keeps them, as before). One call at a time: it walks every arena."""
    if _TRIM is None:
        return False
    with _lock:
        _TRIM(0)
    return True
