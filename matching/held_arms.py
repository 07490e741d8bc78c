"""An offer's arm as this process last knew it: a mask over a side's people, not a set of refs.

A reconciliation removes from an arm whoever is no longer eligible. Reading the arm from the
database each time, and naming the eligible as strings, cost a serving process seconds per
reconciliation once an offer's members held a million people each (the soak of issue 19,
"day N": a third of a serving process's samples). But arms only ever shrink, so an arm read
once stays a superset of the arm for good: each process keeps it, as a boolean mask over the
person indices of the arrays it was last compared with, and a reconciliation is a mask
operation. Only those it removes are named.

When the side's people change (an upload's flip, an erasure's patch, a new member), the mask is
carried over to the new people by ref: both are sorted by ref bytewise, so one compiled merge
of the two blobs (:func:`matching.kernels.carry_people`) carries it, a few milliseconds at a
million people. A held ref the new people no longer hold is kept by name
(:attr:`HeldArm.elsewhere`): it is no longer eligible, and is removed with the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from matching.array_files import People
from matching.kernels import carry_people, read_only


def carried(
    old: People, mask: NDArray[np.bool_], new: People
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """``new``'s mask of the refs ``mask`` marks among ``old``, and the indices of marked
    ``old`` people whose ref ``new`` does not hold."""
    new_mask, lost = carry_people(
        read_only(np.frombuffer(old.blob, dtype=np.uint8)),
        read_only(np.asarray(old.offsets, dtype=np.int64)),
        read_only(mask),
        read_only(np.frombuffer(new.blob, dtype=np.uint8)),
        read_only(np.asarray(new.offsets, dtype=np.int64)),
    )
    return new_mask, lost


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
        # Code point order (the UTF-8 bytes' order), each once; quick on refs read in order.
        names = list(dict.fromkeys(sorted(refs)))
        read = People.of(names)
        mask, lost = carried(read, np.ones(len(read), dtype=bool), people)
        return cls(people, mask, {names[i] for i in lost})

    def moved_to(self, people: People) -> HeldArm:
        """The same arm over ``people`` (another version's)."""
        if same_people(self.people, people):
            return HeldArm(people, self.mask, self.elsewhere)
        mask, lost = carried(self.people, self.mask, people)
        back = people.positions(self.elsewhere)  # held by name, and these people hold them
        mask[np.fromiter(back.values(), dtype=np.int64, count=len(back))] = True
        elsewhere = set(self.people.refs(lost)) | (self.elsewhere - back.keys())
        return HeldArm(people, mask, elsewhere)

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
