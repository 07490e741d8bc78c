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
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from matching.kernels import bitmap, carry_people, connect, merge_into, read_only

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
            pending = pool.submit(bitmap, pair_b, n_b)
            a_bitmap = bitmap(pair_a, n_a)
            b_bitmap = pending.result()
    else:
        a_bitmap, b_bitmap = bitmap(pair_a, n_a), bitmap(pair_b, n_b)
    count, a_group, b_group = connect(pair_a, pair_b, a_bitmap, b_bitmap)
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
        read_only(column[a_start:a_end]) for column in (a.hi, a.lo, a.person, a.consent)
    )
    b_hi, b_lo, b_person, b_consent = (
        read_only(column[b_start:b_end]) for column in (b.hi, b.lo, b.person, b.consent)
    )
    capacity = max(16, min(len(a_hi), len(b_hi)))
    out_a = np.empty(capacity, np.int32)
    out_b = np.empty(capacity, np.int32)
    i = j = k = 0
    while True:
        i, j, k = merge_into(
            a_hi, a_lo, a_person, a_consent, b_hi, b_lo, b_person, b_consent, mask,
            out_a, out_b, i, j, k,
        )  # fmt: skip
        if i >= len(a_hi) or j >= len(b_hi):
            return out_a[:k], out_b[:k]  # views: no copy of millions of pairs
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


def warm_up() -> None:
    """Load the compiled kernels (from numba's on-disk cache) before the first real request."""
    keys = np.array([1, 2, 3], dtype=np.uint64)
    side = make_side(keys, keys, np.array([0, 1, 1]), np.array([7, 7, 7]), 2)
    overlap_matrix([side, side], 1)
    audience(match(side, side, 1), side, "a")
    # matching.held_arms's merge of people by ref, with the read-only arguments it passes.
    ref = np.frombuffer(b"ab", dtype=np.uint8)
    offsets = read_only(np.array([0, 2], dtype=np.int64))
    carry_people(ref, offsets, read_only(np.ones(1, dtype=bool)), ref, offsets)
