"""Holdout assignment of matched groups: deterministic under a salt, about h of the groups,
one arm per group on both sides, and keyed by the group's smallest shared key."""

from __future__ import annotations

import hashlib
import hmac
import math

import numpy as np
import pytest

from matching import engine, holdout

GROUPS = 10_000


def _sides(seed: int) -> tuple[engine.Side, engine.Side]:
    """10k shared people, one key each, plus a second shared key for every tenth person
    (a group of two records); a few keys on one side only."""
    rng = np.random.default_rng(seed)
    hi = rng.integers(0, 2**63, GROUPS + 1000, dtype=np.uint64)
    lo = rng.integers(0, 2**63, GROUPS + 1000, dtype=np.uint64)
    person = np.concatenate([np.arange(GROUPS), np.arange(0, GROUPS, 10)]).astype(np.int32)
    consent = np.full(GROUPS + 1000, 7, dtype=np.uint8)
    a = engine.make_side(hi, lo, person, consent, GROUPS)
    # B numbers its people the other way round and holds keys A lacks.
    extra_hi = rng.integers(0, 2**63, 50, dtype=np.uint64)
    b = engine.make_side(
        np.concatenate([hi, extra_hi]),
        np.concatenate([lo, extra_hi]),
        np.concatenate([GROUPS - 1 - person, np.arange(50, dtype=np.int32) % GROUPS]),
        np.full(GROUPS + 1050, 7, dtype=np.uint8),
        GROUPS,
    )
    return a, b


def _split(salt: bytes, share: float, seed: int = 1) -> tuple[np.ndarray, engine.Groups]:
    a, b = _sides(seed)
    groups = engine.match(a, b, 2)
    hi, lo = holdout.smallest_shared_keys(groups, a, b, 2)
    return holdout.held_out_groups(salt, hi, lo, share), groups


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
def test_about_h_of_10k_groups_are_held_out_within_binomial_bounds(share: float) -> None:
    held, groups = _split(b"s" * 32, share)
    assert groups.count >= GROUPS - 60  # a few B-only keys join groups; most are one pair
    sd = math.sqrt(groups.count * share * (1 - share))
    assert abs(int(held.sum()) - groups.count * share) <= 5 * sd


def test_the_same_salt_gives_the_same_split_and_another_salt_another() -> None:
    first, _ = _split(b"a" * 32, 0.1)
    again, _ = _split(b"a" * 32, 0.1)
    other, _ = _split(b"b" * 32, 0.1)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # Independent salts agree on about 1 - 2h(1-h) of the groups, not on all of them.
    assert 0.75 < float(np.mean(first == other)) < 0.9


def test_zero_holdout_holds_nobody_out() -> None:
    held, _ = _split(b"z" * 32, 0.0)
    assert not held.any()
    with pytest.raises(ValueError, match="holdout"):
        _split(b"z" * 32, 0.6)


def test_both_sides_of_a_group_share_its_arm() -> None:
    held, groups = _split(b"c" * 32, 0.3)
    a_people = np.sort(groups.a_person)
    b_people = np.sort(groups.b_person)
    a_held = holdout.held_out_people(groups, "a", a_people, held)
    b_held = holdout.held_out_people(groups, "b", b_people, held)
    # A's person p shares its first key with B's person GROUPS-1-p (see _sides).
    by_a = dict(zip(a_people.tolist(), a_held.tolist(), strict=True))
    by_b = dict(zip(b_people.tolist(), b_held.tolist(), strict=True))
    assert all(by_a[p] == by_b[GROUPS - 1 - p] for p in range(0, GROUPS, 7) if p in by_a)


def test_a_groups_point_is_the_hmac_of_its_smallest_shared_key() -> None:
    a, b = _sides(5)
    groups = engine.match(a, b, 2)
    hi, lo = holdout.smallest_shared_keys(groups, a, b, 2)
    person_zero_group = int(groups.a_group[np.searchsorted(groups.a_person, 0)])
    # Person 0 holds two keys (it is a multiple of ten): the smaller of the two is used.
    keys = sorted((int(a.hi[i]), int(a.lo[i])) for i in np.flatnonzero(a.person == 0).tolist())
    assert (int(hi[person_zero_group]), int(lo[person_zero_group])) == keys[0]
    raw = keys[0][0].to_bytes(8, "big") + keys[0][1].to_bytes(8, "big")
    digest = hmac.digest(b"k" * 32, raw, hashlib.sha256)
    expected = (int.from_bytes(digest[:8], "big") >> 11) / 2**53
    assert holdout.assignment_point(b"k" * 32, raw) == expected
