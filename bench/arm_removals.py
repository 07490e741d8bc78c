"""Who leaves an offer's arm (issue 19): an arm kept as a mask over the people against the
arm read as refs and compared with the eligible named as strings, at a million people a side.

    .venv/bin/python -m bench.arm_removals

The baseline is what each reconciliation did before (``matching.offer_arms`` before 77bc770,
not counting the database read of the arm, which it also paid each time): the held refs minus
the eligible named. The mask pays once per process (building it from the refs read) and once
per change of the people (carrying it to the new version), then each reconciliation is a mask
operation. Numbers in bench/README.md.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from matching.array_files import People
from matching.held_arms import HeldArm

PEOPLE = 1_000_000
ROUNDS = 5


def best(work: Callable[[], Any]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    refs = [f"air-{i:08d}" for i in range(PEOPLE)]
    people = People.of(refs)
    rng = random.Random(7)
    for held_share in (0.017, 0.9):
        held = set(rng.sample(refs, int(PEOPLE * held_share)))
        # A few withdrawals since the last reconciliation: everyone else is still eligible.
        out = set(rng.sample(sorted(held), 20))
        eligible = np.array([i for i, r in enumerate(refs) if r not in out], dtype=np.int64)
        arm = HeldArm.of(people, held)
        assert arm.gone(eligible) == sorted(held - set(people.refs(eligible)))
        baseline = best(lambda: held - set(people.refs(eligible)))  # noqa: B023
        masked = best(lambda: arm.gone(eligible))  # noqa: B023
        built = best(lambda: HeldArm.of(people, held))  # noqa: B023
        # An erasure's patch: one person fewer, so the mask is carried by ref.
        fewer = People.of(refs[:500] + refs[501:])
        carried = best(lambda: arm.moved_to(fewer))  # noqa: B023
        print(
            f"held {len(held):>9,} of {PEOPLE:,}: a reconciliation {baseline:.3f} s as refs, "
            f"{masked:.4f} s as a mask ({baseline / masked:.0f}x); once per process "
            f"{built:.2f} s, once per change of the people {carried:.2f} s"
        )


if __name__ == "__main__":
    main()
