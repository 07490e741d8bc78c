"""The matching engine's compiled kernels (numba): the merge of two key-sorted sides, people
bitmaps with a popcount rank, and the union-find that numbers the groups.

Imports nothing of the project; :mod:`matching.engine` uses it, and :mod:`matching.held_arms`
the merge of two sides' people by ref.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit
from numpy.typing import NDArray

# --------------------------------------------------------------------------- kernels
# Compiled with numba: a branch-light merge of the two key-sorted sides, then a union-find on
# compact ids. Person indices are random with respect to key order, so the people seen in
# pairs are kept in bitmaps (n/8 bytes, cache resident) with a popcount rank, instead of
# dense per-person arrays whose random access would dominate the run time.

_Function = TypeVar("_Function", bound=Callable[..., Any])


def _compiled(function: _Function) -> _Function:
    """Compile with numba, cached on disk so a process pays the JIT cost once per machine."""
    return cast(_Function, njit(cache=True, nogil=True)(function))


def read_only(column: NDArray[Any]) -> NDArray[Any]:
    """A read-only view of a kernel's argument, whatever the array is.

    numba compiles the kernel once per combination of argument types, and writability is part
    of the type: columns served from memory-mapped files are read-only, a patched consent mask
    or a side built in memory is writable. Without this the serving processes compiled four
    variants of the merge on their first questions (seconds of CPU each, holding the GIL),
    none of which the start-up warm-up had compiled; now there is one, and it is warmed up
    (:func:`matching.engine.warm_up`). The people of :mod:`matching.held_arms` likewise."""
    view = column.view(np.ndarray)
    view.flags.writeable = False
    return view


_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)


@_compiled
def merge_into(
    a_hi: Any,
    a_lo: Any,
    a_person: Any,
    a_consent: Any,
    b_hi: Any,
    b_lo: Any,
    b_person: Any,
    b_consent: Any,
    mask: int,
    out_a: Any,
    out_b: Any,
    i: int,
    j: int,
    k: int,
) -> Any:  # pragma: no cover - compiled
    """Merge from records (i, j), writing consented matches at out[k:]; stop when out is full.

    Returns the next (i, j, k); the caller grows the buffers and resumes while i, j remain.
    """
    na = a_hi.shape[0]
    nb = b_hi.shape[0]
    capacity = out_a.shape[0]
    while i < na and j < nb:
        ah = a_hi[i]
        bh = b_hi[j]
        if ah != bh:  # the usual case; advancing by arithmetic avoids a second branch
            a_first = ah < bh
            i += a_first
            j += not a_first
            continue
        al = a_lo[i]
        bl = b_lo[j]
        if al != bl:
            a_first = al < bl
            i += a_first
            j += not a_first
            continue
        # Equal keys: every consented record of A's run matches every one of B's run.
        i_end = i + 1
        while i_end < na and a_hi[i_end] == ah and a_lo[i_end] == al:
            i_end += 1
        j_end = j + 1
        while j_end < nb and b_hi[j_end] == bh and b_lo[j_end] == bl:
            j_end += 1
        if k + (i_end - i) * (j_end - j) > capacity:
            break
        for r in range(i, i_end):
            if (a_consent[r] & mask) != mask:
                continue
            for s in range(j, j_end):
                if (b_consent[s] & mask) == mask:
                    out_a[k] = a_person[r]
                    out_b[k] = b_person[s]
                    k += 1
        i = i_end
        j = j_end
    return i, j, k


@_compiled
def _popcount(x: Any) -> Any:  # pragma: no cover - compiled
    x = x - ((x >> _ONE) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@_compiled
def _rank(index: Any, x: Any) -> Any:  # pragma: no cover - compiled
    """The number of set bits below bit x: x's compact id when x is set."""
    low = (_ONE << np.uint64(x & 63)) - _ONE
    return np.int64(index[x >> 6, 1] + _popcount(index[x >> 6, 0] & low))


@_compiled
def _root(parent: Any, x: Any) -> Any:  # pragma: no cover - compiled
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving keeps later finds short
        x = parent[x]
    return x


@_compiled
def bitmap(people: Any, n: int) -> Any:  # pragma: no cover - compiled
    """The set of people: a rank index, its sorted members, and whether anyone repeats.

    The index holds, per 64 people, their bits and the count of members before them, side by
    side so that a rank costs one cache line.
    """
    words = np.zeros(n // 64 + 1, np.uint64)
    repeated = False
    for x in people:
        bit = _ONE << np.uint64(x & 63)
        if words[x >> 6] & bit:
            repeated = True
        words[x >> 6] |= bit
    index = np.empty((words.shape[0], 2), np.uint64)
    total = _ZERO
    for w in range(words.shape[0]):
        index[w, 0] = words[w]
        index[w, 1] = total
        total += _popcount(words[w])
    members = np.empty(np.int64(total), np.int32)
    m = 0
    for w in range(words.shape[0]):
        v = words[w]
        while v != _ZERO:
            lowest = v & (~v + _ONE)
            members[m] = w * 64 + np.int64(_popcount(lowest - _ONE))
            m += 1
            v ^= lowest
    return index, members, repeated


@_compiled
def connect(pair_a: Any, pair_b: Any, a_bitmap: Any, b_bitmap: Any) -> Any:  # pragma: no cover
    """Groups of the pairs' people: (count, a_group, b_group) over the sorted members.

    Compact ids: A members 0..na-1 in person order, then B members. Union by smaller id
    keeps every root at its group's smallest A person, so scanning A members upwards meets
    each group first at that person and numbers the groups as the contract requires.
    """
    a_index, a_members, a_repeated = a_bitmap
    b_index, b_members, b_repeated = b_bitmap
    na = a_members.shape[0]
    nb = b_members.shape[0]
    if not (a_repeated or b_repeated):
        # Nobody appears in two pairs: each pair is its own group.
        b_group = np.empty(nb, np.int32)
        for k in range(pair_a.shape[0]):
            b_group[_rank(b_index, pair_b[k])] = _rank(a_index, pair_a[k])
        return na, np.arange(na).astype(np.int32), b_group
    parent = np.arange(na + nb).astype(np.int32)
    for k in range(pair_a.shape[0]):
        rx = _root(parent, _rank(a_index, pair_a[k]))
        ry = _root(parent, na + _rank(b_index, pair_b[k]))
        if rx < ry:
            parent[ry] = rx
        elif ry < rx:
            parent[rx] = ry
    a_group = np.empty(na, np.int32)
    count = 0
    for x in range(na):
        r = _root(parent, x)
        if r == x:
            a_group[x] = count
            count += 1
        else:
            a_group[x] = a_group[r]  # r < x, already numbered
    b_group = np.empty(nb, np.int32)
    for y in range(nb):
        b_group[y] = a_group[_root(parent, na + y)]
    return count, a_group, b_group


# --------------------------------------------------------------------------- people by ref
@_compiled
def _compare(a: Any, a0: int, a1: int, b: Any, b0: int, b1: int) -> int:  # pragma: no cover
    """-1, 0 or 1 as the bytes a[a0:a1] sort before, as or after b[b0:b1]."""
    la = a1 - a0
    lb = b1 - b0
    for t in range(min(la, lb)):
        x = a[a0 + t]
        y = b[b0 + t]
        if x != y:
            return 1 if x > y else -1
    if la == lb:
        return 0
    return 1 if la > lb else -1


@_compiled
def carry_people(
    old_blob: Any, old_offsets: Any, old_mask: Any, new_blob: Any, new_offsets: Any
) -> Any:  # pragma: no cover - compiled
    """Two sides' people, each sorted by ref (UTF-8 bytes in a blob, cut at offsets): the new
    side's mask of the refs the old side marks, and the old indices of marked refs the new
    side does not hold. One pass over both, as a merge."""
    n_old = old_offsets.shape[0] - 1
    n_new = new_offsets.shape[0] - 1
    new_mask = np.zeros(n_new, np.bool_)
    lost = np.empty(n_old, np.int64)
    k = 0
    j = 0
    for i in range(n_old):
        if not old_mask[i]:
            continue
        a0 = old_offsets[i]
        a1 = old_offsets[i + 1]
        found = False
        while j < n_new:
            c = _compare(old_blob, a0, a1, new_blob, new_offsets[j], new_offsets[j + 1])
            if c > 0:
                j += 1  # the new side's ref sorts first: nobody marked holds it
                continue
            if c == 0:
                new_mask[j] = True
                j += 1
                found = True
            break
        if not found:
            lost[k] = i
            k += 1
    return new_mask, lost[:k]
