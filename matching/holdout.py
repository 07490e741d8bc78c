"""Holdout assignment of a joint offer's matched groups (DESIGN.md "Offer measurement").

At activation every matched group gets one number in [0, 1): HMAC-SHA256 under the offer's
secret salt of the group's smallest shared match key (the first 16 bytes, as the engine holds
them), its first 53 bits read as a fraction. The group is held out (control) when the number
is below the offer's holdout share ``h``, so about ``h`` of the groups are; both sides of a
group land in the same arm, and the same salt and keys always give the same split.

The arms are then stored per person and side; this module is only called at activation.
Later key rotations and group changes therefore never re-assign anyone (reconciliation only
removes people from the stored arms).

Pure: numpy and the standard library only, plus the engine's types.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
from numpy.typing import NDArray

from matching.engine import Groups, Side, SideName

__all__ = ["assignment_point", "held_out_groups", "held_out_people", "smallest_shared_keys"]

_FRACTION_BITS = 53  # a float64 holds 53 bits exactly: every point is a distinct float


def assignment_point(salt: bytes, key: bytes) -> float:
    """The group's point in [0, 1): HMAC-SHA256(salt, key), first 53 bits as a fraction."""
    digest = hmac.digest(salt, key, hashlib.sha256)
    return (int.from_bytes(digest[:8], "big") >> (64 - _FRACTION_BITS)) / (1 << _FRACTION_BITS)


def smallest_shared_keys(
    groups: Groups, a: Side, b: Side, mask: int
) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Per group id, the (hi, lo) of the smallest key that both sides consented to `mask` and
    that links the group (a key shared by an A person and a B person of it)."""
    a_keep = (a.consent & np.uint8(mask)) == mask
    b_keep = (b.consent & np.uint8(mask)) == mask
    a_hi, a_lo, a_person = a.hi[a_keep], a.lo[a_keep], a.person[a_keep]
    b_hi, b_lo = b.hi[b_keep], b.lo[b_keep]
    start = np.searchsorted(b_hi, a_hi, side="left")
    end = np.searchsorted(b_hi, a_hi, side="right")
    shared = np.zeros(a_hi.shape[0], dtype=bool)
    single = end - start == 1
    shared[single] = b_lo[start[single]] == a_lo[single]
    for index in np.flatnonzero(end - start > 1).tolist():  # equal first halves: rare
        shared[index] = bool(np.any(b_lo[start[index] : end[index]] == a_lo[index]))
    # Records are in key order, so the first shared record of each group is its smallest key.
    index = np.flatnonzero(shared)
    people = a_person[index]
    group = groups.a_group[np.searchsorted(groups.a_person, people)]
    _, first = np.unique(group, return_index=True)
    hi = np.zeros(groups.count, dtype=np.uint64)
    lo = np.zeros(groups.count, dtype=np.uint64)
    hi[group[first]] = a_hi[index[first]]
    lo[group[first]] = a_lo[index[first]]
    return hi, lo


def held_out_groups(
    salt: bytes, hi: NDArray[np.uint64], lo: NDArray[np.uint64], holdout: float
) -> NDArray[np.bool_]:
    """Per group, whether it is held out: its assignment point is below `holdout`."""
    if not 0.0 <= holdout <= 0.5:
        raise ValueError("the holdout share lies in [0, 0.5]")
    held = np.zeros(hi.shape[0], dtype=bool)
    if holdout == 0.0:
        return held
    keys = np.empty((hi.shape[0], 2), dtype=">u8")
    keys[:, 0], keys[:, 1] = hi, lo
    raw = keys.tobytes()
    for group in range(hi.shape[0]):
        held[group] = assignment_point(salt, raw[16 * group : 16 * group + 16]) < holdout
    return held


def held_out_people(
    groups: Groups, which: SideName, people: NDArray[np.int32], held: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """For sorted `people` of side `which` (all in some group), whether each is held out."""
    person, group = (
        (groups.a_person, groups.a_group) if which == "a" else (groups.b_person, groups.b_group)
    )
    flags: NDArray[np.bool_] = held[group[np.searchsorted(person, people)]]
    return flags
