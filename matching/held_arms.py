"""An offer's arm as this process last knew it: a mask over a side's people, not a set of refs.

A reconciliation removes from an arm whoever is no longer eligible. Reading the arm from the
database each time, and naming the eligible as strings, cost a serving process seconds per
reconciliation once an offer's members held a million people each (the soak of issue 19,
"day N": two thirds of a serving process's samples). But arms only ever shrink, so an arm read
once stays a superset of the arm for good: each process keeps it, as a boolean mask over the
person indices of the arrays it was last compared with, and a reconciliation is a mask
operation. Only those it removes are named.

When the side's people change (an upload's flip, an erasure's patch, a new member), the mask is
carried over to the new people by ref: the people are sorted by ref bytewise, so each side's
refs become a fixed-width byte-string array and one ``searchsorted`` finds them all. A held ref
the new people no longer hold is kept by name (:attr:`HeldArm.elsewhere`): it is no longer
eligible, and is removed with the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from matching.array_files import People

# People turned into fixed-width keys this many at a time (bounds the scratch index arrays).
CHUNK = 131_072


def keys(people: People) -> NDArray[np.bytes_]:
    """Each person's ref as a fixed-width byte string, in person order (sorted: numpy compares
    byte strings as zero-padded bytes, which is the refs' bytewise order, a ref holding no NUL)."""
    n = len(people)
    offsets = people.offsets
    lengths = np.diff(offsets)
    width = max(1, int(lengths.max()) if n else 1)
    out = np.zeros(n, dtype=f"S{width}")
    grid = out.view(np.uint8).reshape(n, width)
    blob = np.frombuffer(people.blob, dtype=np.uint8)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        counts = lengths[start:stop]
        first, last = int(offsets[start]), int(offsets[stop])
        rows = np.repeat(np.arange(start, stop), counts)
        columns = np.arange(first, last) - np.repeat(offsets[start:stop], counts)
        grid[rows, columns] = blob[first:last]
    return out


def encoded(refs: Iterable[str]) -> NDArray[np.bytes_]:
    """``refs`` as a fixed-width byte-string array (UTF-8)."""
    raw = [ref.encode() for ref in refs]
    return np.array(raw, dtype=f"S{max(1, max(map(len, raw), default=1))}")


def locate(sorted_keys: NDArray[np.bytes_], wanted: NDArray[np.bytes_]) -> NDArray[np.int64]:
    """The index of each of ``wanted`` among ``sorted_keys``, -1 where it is not there."""
    if not len(sorted_keys) or not len(wanted):
        return np.full(len(wanted), -1, dtype=np.int64)
    width = max(sorted_keys.dtype.itemsize, wanted.dtype.itemsize)
    haystack = sorted_keys.astype(f"S{width}", copy=False)
    needles = wanted.astype(f"S{width}", copy=False)
    at = np.searchsorted(haystack, needles)
    found = haystack[np.minimum(at, len(haystack) - 1)] == needles
    found &= at < len(haystack)
    return np.where(found, at, -1).astype(np.int64)


def same_people(a: People, b: People) -> bool:
    return a is b or (
        len(a) == len(b) and np.array_equal(a.offsets, b.offsets) and a.blob == b.blob
    )


@dataclass(slots=True)
class HeldArm:
    """A superset of one side's arm: the people of :attr:`people` marked in :attr:`mask`, and
    refs :attr:`people` does not hold (:attr:`elsewhere`)."""

    people: People
    mask: NDArray[np.bool_]
    elsewhere: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, people: People, refs: Iterable[str]) -> HeldArm:
        """The arm ``refs`` (as read from the database) over ``people``."""
        names = sorted(set(refs))
        wanted = encoded(names)
        at = locate(keys(people), wanted)
        mask = np.zeros(len(people), dtype=bool)
        mask[at[at >= 0]] = True
        return cls(people, mask, {names[i] for i in np.flatnonzero(at < 0)})

    def moved_to(self, people: People) -> HeldArm:
        """The same arm over ``people`` (another version's)."""
        if same_people(self.people, people):
            return HeldArm(people, self.mask, self.elsewhere)
        held = keys(self.people)[self.mask]
        at = locate(keys(people), held)
        mask = np.zeros(len(people), dtype=bool)
        mask[at[at >= 0]] = True
        elsewhere = {ref.decode() for ref in held[at < 0]}
        back = people.positions(self.elsewhere)  # held by name, and these people hold them
        mask[np.fromiter(back.values(), dtype=np.int64, count=len(back))] = True
        return HeldArm(people, mask, elsewhere | (self.elsewhere - back.keys()))

    def __len__(self) -> int:
        return int(self.mask.sum()) + len(self.elsewhere)

    def gone(self, eligible: NDArray[np.int64]) -> list[str]:
        """Those held who are not among ``eligible`` (person indices of :attr:`people`),
        sorted."""
        still = np.zeros(len(self.people), dtype=bool)
        still[eligible] = True
        return sorted([*self.people.refs(np.flatnonzero(self.mask & ~still)), *self.elsewhere])

    def forget(self, refs: Iterable[str]) -> None:
        """``refs`` are out of the arm for good (removed, by this process or another)."""
        names = set(refs)
        where = self.people.positions(names)
        self.mask[np.fromiter(where.values(), dtype=np.int64, count=len(where))] = False
        self.elsewhere -= names
