"""The matching engine: consented overlaps between two partners' sorted match-key arrays.

Pure functions on numpy arrays (DESIGN.md "Matching semantics" and "Engineering decisions").
A side is one partner's records sorted by their 128-bit match key, stored as two unsigned
64-bit columns (`hi`, `lo`) compared lexicographically. An overlap is a single merge of two
sorted arrays, compiled with numba, followed by a union-find over the matched people: people
linked by any consented shared key form one group, and the overlap is the number of groups.

This module imports nothing of the project (an architecture test enforces it).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Attribute",
    "Groups",
    "Side",
    "audience",
    "breakdown",
    "empty_side",
    "groups_from_pairs",
    "make_side",
    "match",
    "matched_pairs",
    "overlap",
    "overlap_matrix",
    "people_with",
    "representatives",
]

SideName = Literal["a", "b"]
# Kernels release the GIL: sides this large are merged (and their people mapped) on threads.
_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_PARALLEL_FROM = 1 << 17


@dataclass(frozen=True, slots=True)
class Attribute:
    """A per-person coded attribute: `values[codes[person]]`, code -1 meaning no value."""

    codes: NDArray[np.int16]
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Side:
    """One partner's records sorted by 128-bit key (hi, lo) lexicographically as unsigned."""

    hi: NDArray[np.uint64]
    lo: NDArray[np.uint64]
    person: NDArray[np.int32]
    consent: NDArray[np.uint8]
    n_people: int
    attributes: Mapping[str, Attribute]


@dataclass(frozen=True, slots=True)
class Groups:
    """Connected groups of matched people between side a and side b.

    `count` is the overlap. Group ids run 0..count-1 in increasing order of the smallest A
    person of each group, so the same inputs always give the same ids.
    """

    count: int
    a_person: NDArray[np.int32]
    a_group: NDArray[np.int32]
    b_person: NDArray[np.int32]
    b_group: NDArray[np.int32]


# --------------------------------------------------------------------------- kernels
# Compiled with numba: a branch-light merge of the two key-sorted sides, then a union-find on
# compact ids. Person indices are random with respect to key order, so the people seen in
# pairs are kept in bitmaps (n/8 bytes, cache resident) with a popcount rank, instead of
# dense per-person arrays whose random access would dominate the run time.

_Function = TypeVar("_Function", bound=Callable[..., Any])


def _compiled(function: _Function) -> _Function:
    """Compile with numba, cached on disk so a process pays the JIT cost once per machine."""
    return cast(_Function, njit(cache=True, nogil=True)(function))


_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)


@_compiled
def _merge_into(
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
def _bitmap(people: Any, n: int) -> Any:  # pragma: no cover - compiled
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
def _connect(pair_a: Any, pair_b: Any, a_bitmap: Any, b_bitmap: Any) -> Any:  # pragma: no cover
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


# --------------------------------------------------------------------------- building sides


def make_side(
    hi: ArrayLike,
    lo: ArrayLike,
    person: ArrayLike,
    consent: ArrayLike,
    n_people: int,
    attributes: Mapping[str, Attribute] | None = None,
) -> Side:
    """Validate and cast the record columns, sort them by key when needed, return a Side."""
    hi_ = np.ascontiguousarray(hi, dtype=np.uint64)
    lo_ = np.ascontiguousarray(lo, dtype=np.uint64)
    person_ = np.ascontiguousarray(person, dtype=np.int32)
    consent_ = np.ascontiguousarray(consent, dtype=np.uint8)
    n = hi_.shape[0]
    if any(column.ndim != 1 or column.shape[0] != n for column in (hi_, lo_, person_, consent_)):
        raise ValueError("hi, lo, person and consent must be 1-D arrays of equal length")
    if n_people < 0:
        raise ValueError("n_people must not be negative")
    if n and (int(person_.min()) < 0 or int(person_.max()) >= n_people):
        raise ValueError("person indices must lie in 0..n_people-1")
    checked = {
        name: _checked_attribute(name, attribute, n_people)
        for name, attribute in (attributes or {}).items()
    }
    if not _is_sorted(hi_, lo_):
        order = _key_order(hi_, lo_)
        hi_, lo_, person_, consent_ = hi_[order], lo_[order], person_[order], consent_[order]
    return Side(hi_, lo_, person_, consent_, int(n_people), checked)


def empty_side() -> Side:
    """A side with no records and no people."""
    no_keys = np.empty(0, np.uint64)
    return make_side(no_keys, no_keys, np.empty(0, np.int32), np.empty(0, np.uint8), 0)


def _checked_attribute(name: str, attribute: Attribute, n_people: int) -> Attribute:
    codes = np.ascontiguousarray(attribute.codes, dtype=np.int16)
    if codes.shape != (n_people,):
        raise ValueError(f"attribute {name!r} needs one code per person ({n_people})")
    if codes.size and (int(codes.min()) < -1 or int(codes.max()) >= len(attribute.values)):
        raise ValueError(f"attribute {name!r} has codes outside -1..{len(attribute.values) - 1}")
    return Attribute(codes, tuple(attribute.values))


def _key_order(hi: NDArray[np.uint64], lo: NDArray[np.uint64]) -> NDArray[np.intp]:
    order = np.argsort(hi)
    sorted_hi = hi[order]
    if np.any(sorted_hi[1:] == sorted_hi[:-1]):
        # Equal first halves (duplicate keys, mostly) need the second half: a slower sort.
        by_both: NDArray[np.intp] = np.lexsort((lo, hi))
        return by_both
    return order


def _is_sorted(hi: NDArray[np.uint64], lo: NDArray[np.uint64]) -> bool:
    if hi.shape[0] < 2:
        return True
    h0, h1 = hi[:-1], hi[1:]
    return bool(np.all((h0 < h1) | ((h0 == h1) & (lo[:-1] <= lo[1:]))))


# --------------------------------------------------------------------------- matching


def matched_pairs(a: Side, b: Side, mask: int) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """The (A person, B person) of every pair of equal-key records both consented to `mask`.

    One entry per matching record pair (so a pair of people may appear more than once), in
    key order. Large sides are merged as key ranges on all cores.
    """
    if not 0 <= mask <= 0xFF:
        raise ValueError("mask must be a consent bit mask in 0..255")
    ranges = _key_ranges(a, b, _THREADS if min(len(a.hi), len(b.hi)) >= _PARALLEL_FROM else 1)
    if len(ranges) == 1:
        return _merge_range(a, b, mask, ranges[0])
    with ThreadPoolExecutor(len(ranges)) as pool:
        parts = list(pool.map(lambda r: _merge_range(a, b, mask, r), ranges))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def groups_from_pairs(
    pair_a: NDArray[np.int32], pair_b: NDArray[np.int32], n_a: int, n_b: int
) -> Groups:
    """Connected groups of the people linked by the pairs, numbered by smallest A person."""
    pair_a = np.ascontiguousarray(pair_a, dtype=np.int32)
    pair_b = np.ascontiguousarray(pair_b, dtype=np.int32)
    if len(pair_a) >= _PARALLEL_FROM and _THREADS > 1:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_bitmap, pair_b, n_b)
            a_bitmap = _bitmap(pair_a, n_a)
            b_bitmap = pending.result()
    else:
        a_bitmap, b_bitmap = _bitmap(pair_a, n_a), _bitmap(pair_b, n_b)
    count, a_group, b_group = _connect(pair_a, pair_b, a_bitmap, b_bitmap)
    return Groups(int(count), a_bitmap[1], a_group, b_bitmap[1], b_group)


def _key_ranges(a: Side, b: Side, parts: int) -> list[tuple[int, int, int, int]]:
    """Split both sides at the same `hi` values, so equal keys never straddle two ranges."""
    cuts = np.unique(a.hi[len(a.hi) * np.arange(1, parts) // parts])
    a_cuts = [0, *np.searchsorted(a.hi, cuts).tolist(), len(a.hi)]
    b_cuts = [0, *np.searchsorted(b.hi, cuts).tolist(), len(b.hi)]
    return [(*a_range, *b_range) for a_range, b_range in zip(
        itertools.pairwise(a_cuts), itertools.pairwise(b_cuts), strict=True
    )]  # fmt: skip


def _merge_range(
    a: Side, b: Side, mask: int, bounds: tuple[int, int, int, int]
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    a_start, a_end, b_start, b_end = bounds
    a_hi, a_lo, a_person, a_consent = (
        column[a_start:a_end] for column in (a.hi, a.lo, a.person, a.consent)
    )
    b_hi, b_lo, b_person, b_consent = (
        column[b_start:b_end] for column in (b.hi, b.lo, b.person, b.consent)
    )
    capacity = max(16, min(len(a_hi), len(b_hi)))
    out_a = np.empty(capacity, np.int32)
    out_b = np.empty(capacity, np.int32)
    i = j = k = 0
    while True:
        i, j, k = _merge_into(
            a_hi, a_lo, a_person, a_consent, b_hi, b_lo, b_person, b_consent, mask,
            out_a, out_b, i, j, k,
        )  # fmt: skip
        if i >= len(a_hi) or j >= len(b_hi):
            return out_a[:k].copy(), out_b[:k].copy()
        # Duplicate keys made a cross product larger than the buffer: grow and resume.
        out_a = np.concatenate([out_a, np.empty_like(out_a)])
        out_b = np.concatenate([out_b, np.empty_like(out_b)])


def match(a: Side, b: Side, mask: int) -> Groups:
    """Group the people of `a` and `b` linked by shared keys consented to `mask` on both sides."""
    pair_a, pair_b = matched_pairs(a, b, mask)
    return groups_from_pairs(pair_a, pair_b, a.n_people, b.n_people)


def overlap(a: Side, b: Side, mask: int) -> int:
    """The consented overlap: the number of groups of matched people."""
    return match(a, b, mask).count


def people_with(side: Side, mask: int) -> int:
    """The number of distinct people with at least one record carrying every bit of `mask`."""
    carrying = (side.consent & np.uint8(mask)) == mask
    present = np.zeros(side.n_people, dtype=bool)
    present[side.person[carrying]] = True
    return int(np.count_nonzero(present))


def overlap_matrix(sides: Sequence[Side], mask: int) -> NDArray[np.int64]:
    """Symmetric matrix of pairwise overlaps; the diagonal is each side's consented people."""
    n = len(sides)
    matrix = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        matrix[i, i] = people_with(sides[i], mask)
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = overlap(sides[i], sides[j], mask)
    return matrix


# --------------------------------------------------------------------------- reading groups


def representatives(groups: Groups, side: SideName) -> NDArray[np.int32]:
    """Per group id, the smallest person index of `side` in that group."""
    person, group = _members(groups, side)
    smallest = np.full(groups.count, np.iinfo(np.int32).max, dtype=np.int32)
    np.minimum.at(smallest, group, person)
    return smallest


def breakdown(
    groups: Groups, a: Side, b: Side, by: Sequence[tuple[SideName, str]]
) -> dict[tuple[str | None, ...], int]:
    """Count groups per value of one or two attributes, read on each group's representative.

    A group's value for ("a", attr) is the value of its smallest A person (None when that
    person has no value or side a has no such attribute). Only non-zero cells are returned,
    and the cells sum to `groups.count`.
    """
    if not 1 <= len(by) <= 2:
        raise ValueError("a breakdown has one or two dimensions")
    sides = {"a": a, "b": b}
    cell = np.zeros(groups.count, dtype=np.int64)
    labels: list[tuple[str | None, ...]] = []
    for which, name in by:
        values, codes = _group_codes(groups, sides[which], which, name)
        cell = cell * (len(values) + 1) + codes
        labels.append((*values, None))
    counts = np.bincount(cell)
    result: dict[tuple[str | None, ...], int] = {}
    for index in np.flatnonzero(counts).tolist():
        key = _cell_key(int(index), labels)
        result[key] = result.get(key, 0) + int(counts[index])
    return result


def audience(
    groups: Groups,
    side: Side,
    which: SideName,
    filters: Mapping[str, Collection[str]] | None = None,
) -> NDArray[np.int32]:
    """Sorted people of side `which` in some group, kept only when every filter admits them.

    A filter on an attribute the side lacks, or a person without a value, excludes the
    person. Filters restrict this side's people only, never the other side's.
    """
    person, _ = _members(groups, which)
    keep = np.ones(person.shape[0], dtype=bool)
    for name, allowed in (filters or {}).items():
        attribute = side.attributes.get(name)
        if attribute is None:
            return np.empty(0, dtype=np.int32)
        admitted = np.array([value in allowed for value in attribute.values] + [False], dtype=bool)
        keep &= admitted[attribute.codes[person]]  # code -1 reads the trailing False
    admitted_people: NDArray[np.int32] = person[keep]
    return admitted_people


def _members(groups: Groups, side: SideName) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    if side == "a":
        return groups.a_person, groups.a_group
    if side == "b":
        return groups.b_person, groups.b_group
    raise ValueError(f"side must be 'a' or 'b', not {side!r}")


def _group_codes(
    groups: Groups, side: Side, which: SideName, name: str
) -> tuple[tuple[str, ...], NDArray[np.int64]]:
    """The attribute's values and, per group, the code of its representative (len = None)."""
    attribute = side.attributes.get(name)
    if attribute is None:
        return (), np.zeros(groups.count, dtype=np.int64)
    codes = attribute.codes[representatives(groups, which)].astype(np.int64)
    codes[codes < 0] = len(attribute.values)
    return attribute.values, codes


def _cell_key(index: int, labels: list[tuple[str | None, ...]]) -> tuple[str | None, ...]:
    key: list[str | None] = []
    for dimension in reversed(labels):
        index, code = divmod(index, len(dimension))
        key.append(dimension[code])
    return tuple(reversed(key))
