"""The merge kernel is compiled once, by the start-up warm-up, for every kind of side.

numba compiles a kernel again for each combination of argument types, and an array's
writability is part of its type. Sides served from memory-mapped files have read-only keys;
a patched consent mask, or a side built in memory, is writable. The serving processes of the
soak (issue 19) compiled four variants of the merge on their first questions, seconds of CPU
each with the GIL held, none of which the warm-up had compiled.
"""

from __future__ import annotations

import numpy as np

from matching import engine
from matching.kernels import merge_into


def side(read_only_keys: bool, read_only_consent: bool) -> engine.Side:
    keys = np.array([1, 2, 3, 5, 8], dtype=np.uint64)
    built = engine.make_side(keys, keys * 7, np.array([0, 1, 1, 2, 3]), np.full(5, 7), 4)
    for column in (built.hi, built.lo, built.person):
        column.flags.writeable = not read_only_keys
    built.consent.flags.writeable = not read_only_consent
    return built


def test_every_kind_of_side_uses_the_merge_the_warm_up_compiled() -> None:
    engine.warm_up()
    compiled = list(merge_into.signatures)
    kinds = [side(False, False), side(True, False), side(True, True)]
    for a in kinds:
        for b in kinds:
            assert engine.overlap(a, b, 1) == 4
    assert list(merge_into.signatures) == compiled
    assert len(compiled) == 1


def test_carrying_an_arm_uses_the_merge_by_ref_the_warm_up_compiled() -> None:
    from matching.array_files import People
    from matching.held_arms import HeldArm
    from matching.kernels import carry_people

    engine.warm_up()
    compiled = list(carry_people.signatures)
    built = People.of([f"c{i:03d}" for i in range(50)])  # in memory: writable offsets
    served = People(bytes(built.blob[4:]), built.offsets[1:] - 4)  # as from files
    served.offsets.flags.writeable = False
    arm = HeldArm.of(built, ["c001", "c002", "c040", "gone"])
    moved = arm.moved_to(served)
    assert moved.gone(np.arange(0)) == ["c001", "c002", "c040", "gone"]
    assert moved.moved_to(built).elsewhere == {"gone"}
    assert list(carry_people.signatures) == compiled
    assert len(compiled) == 1
