"""Who leaves an offer's arm: the held refs that are no longer eligible, computed by looking
the held up among the people (a small arm) or by naming every eligible person (a large one).
Both ways must give the same answer, including for refs the arrays no longer hold at all."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from matching import offer_arms
from matching.array_files import People


def case(seed: int) -> tuple[Any, np.ndarray, set[str], set[str]]:
    rng = random.Random(seed)
    refs = sorted(
        {
            f"c-{rng.randrange(10**6)}-é" if rng.random() < 0.1 else f"c{rng.randrange(10**6)}"
            for _ in range(3000)
        }
    )
    people = People.of(refs)
    eligible = np.array(sorted(rng.sample(range(len(refs)), 1800)), dtype=np.int64)
    names = {refs[i] for i in eligible}
    held = set(rng.sample(sorted(names), 300)) | set(rng.sample(refs, 200)) | {"gone-1", "zz", ""}
    expected = held - names
    return SimpleNamespace(people=people), eligible, held, expected


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cost", [0, 10**9], ids=["name-the-eligible", "look-up-the-held"])
def test_both_ways_remove_exactly_the_held_who_are_no_longer_eligible(
    seed: int, cost: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded, eligible, held, expected = case(seed)
    monkeypatch.setattr(offer_arms, "BISECT_COST", cost)
    gone = offer_arms.no_longer_eligible(cast(Any, loaded), eligible, held)
    assert gone == sorted(expected)
    assert expected  # the case has people to remove, and people who stay
    assert held - expected
