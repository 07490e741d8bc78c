"""Who leaves an offer's arm (issue 19): looking the held refs up among a side's people against
naming every eligible person, for arms of several sizes against a million eligible.

    .venv/bin/python -m bench.arm_removals

The crossover sets ``matching.offer_arms.BISECT_COST``; numbers in bench/README.md.
"""

from __future__ import annotations

import random
import time
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from matching import offer_arms
from matching.array_files import People

PEOPLE = 1_000_000


def main() -> None:
    refs = sorted(f"cust-{i:07d}" for i in range(PEOPLE))
    loaded = cast(Any, SimpleNamespace(people=People.of(refs)))
    eligible = np.arange(PEOPLE, dtype=np.int64)
    rng = random.Random(7)
    for size in (17_000, 62_500, 100_000, 1_000_000):
        held = set(rng.sample(refs, size))
        seconds = {}
        for way, cost in (("look up the held", 0), ("name the eligible", 10**9)):
            offer_arms.BISECT_COST = cost
            started = time.perf_counter()
            offer_arms.no_longer_eligible(loaded, eligible, held)
            seconds[way] = time.perf_counter() - started
        looked, named = seconds["look up the held"], seconds["name the eligible"]
        print(
            f"held {size:>9,} of {PEOPLE:,} eligible: look up the held {looked:.2f} s, "
            f"name the eligible {named:.2f} s, ratio {named / looked:.2f}"
        )


if __name__ == "__main__":
    main()
