"""Who leaves an offer's arm, as a serving process keeps the arm: a mask over a side's people
carried from version to version (matching.held_arms). Every answer is checked against the
plain set difference of refs, across changes of the people (added, removed, back again)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from matching.array_files import People
from matching.held_arms import HeldArm, carried


def some_refs(rng: random.Random, n: int) -> set[str]:
    out: set[str] = set()
    while len(out) < n:
        roll = rng.random()
        number = rng.randrange(10**6)
        if roll < 0.1:
            out.add(f"c-{number}-é")  # UTF-8 beyond ASCII
        elif roll < 0.2:
            out.add(f"c{number}"[: rng.randrange(1, 4)])  # prefixes of one another
        else:
            out.add(f"c{number}")
    return out


def names(people: People, indices: np.ndarray) -> set[str]:
    return set(people.refs(indices))


def test_the_merge_by_ref_carries_exactly_the_marked_refs_the_new_people_hold() -> None:
    rng = random.Random(3)
    old_refs = sorted(some_refs(rng, 5000) | {"", "a", "ab", "a\u00e9", "b"})
    new_refs = sorted(set(rng.sample(old_refs, 4000)) | some_refs(rng, 500) | {"a", "abc"})
    assert old_refs == sorted(old_refs, key=str.encode)  # the people's order: UTF-8 bytes
    old, new = People.of(old_refs), People.of(new_refs)
    mask = np.array([rng.random() < 0.7 for _ in old_refs])
    new_mask, lost = carried(old, mask, new)
    marked = {r for r, m in zip(old_refs, mask, strict=True) if m}
    assert {r for r, m in zip(new_refs, new_mask, strict=True) if m} == marked & set(new_refs)
    assert set(old.refs(lost)) == marked - set(new_refs)
    assert lost.tolist() == sorted(lost.tolist())


@pytest.mark.parametrize("seed", range(6))
def test_the_arm_loses_exactly_the_held_who_are_no_longer_eligible_across_versions(
    seed: int,
) -> None:
    rng = random.Random(seed)
    refs = sorted(some_refs(rng, 3000))
    people = People.of(refs)
    # Held: most of the people, and refs these people never held (erased before the read).
    held = set(rng.sample(refs, 2000)) | {"gone-1", "zz", ""}
    arm = HeldArm.of(people, held)
    assert len(arm) == len(held)
    for _ in range(4):
        eligible = np.array(sorted(rng.sample(range(len(people)), len(people) // 2)))
        gone = arm.gone(eligible)
        expected = held - names(people, eligible)
        assert gone == sorted(expected)
        assert expected
        assert held - expected
        # Removed (by this process or another): out of the arm for good.
        forgotten = set(rng.sample(sorted(expected), len(expected) // 2))
        arm.forget(forgotten)
        held -= forgotten
        # The next version: some people erased, new ones uploaded, one held by name back.
        kept = set(rng.sample(refs, int(len(refs) * 0.9)))
        back = rng.sample(sorted(arm.elsewhere), min(1, len(arm.elsewhere)))
        refs = sorted(kept | some_refs(rng, 300) | set(back), key=str.encode)
        people = People.of(refs)
        arm = arm.moved_to(people)
        assert len(arm) == len(held)
        assert set(people.refs(np.flatnonzero(arm.mask))) | arm.elsewhere == held
        assert not arm.elsewhere & set(refs)


def test_the_same_people_carry_the_mask_as_it_is() -> None:
    refs = [f"c{i:04d}" for i in range(100)]
    arm = HeldArm.of(People.of(refs), refs[:50])
    again = People.of(list(refs))  # another version whose people did not change
    moved = arm.moved_to(again)
    assert moved.people is again
    assert moved.mask is arm.mask
    assert moved.gone(np.arange(10)) == refs[10:50]
