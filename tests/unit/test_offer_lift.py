"""The statistics of offer results, on seeded simulations: the interval covers a planted lift
as often as a 95 % interval should, is no wider than needed, the test's false-positive rate is
about 5 %, and with epsilon = 1 the noise variance sits inside the interval.

Everything goes through the release the hub uses (thresholds, noise, lift from released
figures). The noise mechanism is injected: a seeded discrete Laplace stub (OpenDP has no
seed); the real OpenDP mechanism is checked separately against the variance the interval
assumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from matching import lift, rules
from matching.result_rules import ArmTruth, Release, ResultsNoise, release_arm, with_lift

RUNS = 200
PER_ARM = 10_000
BASE_RATE = 0.10
PLANTED = 0.02
MIN_AUDIENCE = 50


class SeededLaplace:
    """A seeded discrete Laplace (a difference of two geometric draws) standing in for
    OpenDP's mechanism in simulations: the same distribution, reproducible."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(
        self, value: int, epsilon: float, sensitivity: int, width: rules.Width = "i32"
    ) -> int:
        scale = sensitivity / epsilon
        p = 1.0 - math.exp(-1.0 / scale)
        return int(value + self.rng.geometric(p) - self.rng.geometric(p))


def _noise(epsilon: float | None, seed: int) -> ResultsNoise:
    return ResultsNoise(epsilon, SeededLaplace(seed), 10_000, 100_000, segments=False)


def _simulate(
    lift_size: float, epsilon: float | None, seed: int
) -> list[tuple[Release, float, float, float]]:
    """Per run: the release, the true difference of the run's rates, and the Wald half-width
    computed from the TRUE counts (the yardstick of the width bound)."""
    rng = np.random.default_rng(seed)
    noise = _noise(epsilon, seed + 1)
    out = []
    for _ in range(RUNS):
        x_t = int(rng.binomial(PER_ARM, BASE_RATE + lift_size))
        x_c = int(rng.binomial(PER_ARM, BASE_RATE))
        treated = release_arm(ArmTruth(PER_ARM, x_t, x_t * 100, x_t * 2500), MIN_AUDIENCE, noise)
        control = release_arm(ArmTruth(PER_ARM, x_c, x_c * 100, x_c * 2500), MIN_AUDIENCE, noise)
        p_t, p_c = x_t / PER_ARM, x_c / PER_ARM
        wald = 1.96 * math.sqrt(p_t * (1 - p_t) / PER_ARM + p_c * (1 - p_c) / PER_ARM)
        out.append((with_lift(treated, control, noise), p_t - p_c, wald, lift_size))
    return out


def _coverage(runs: list[tuple[Release, float, float, float]]) -> float:
    covered = 0
    for release, _, _, planted in runs:
        assert release.lift is not None
        low, high = release.lift.absolute_ci
        covered += low <= planted <= high
    return covered / len(runs)


def _widest_ratio(runs: list[tuple[Release, float, float, float]]) -> float:
    ratios = []
    for release, _, wald, _ in runs:
        assert release.lift is not None
        low, high = release.lift.absolute_ci
        ratios.append((high - low) / 2 / wald)
    return max(ratios)


def _false_positive_rate(runs: list[tuple[Release, float, float, float]]) -> float:
    positives = sum(1 for r, *_ in runs if r.lift is not None and r.lift.p_value < 0.05)
    return positives / len(runs)


@pytest.mark.parametrize("epsilon", [None, 1.0], ids=["exact", "epsilon-1"])
def test_the_interval_covers_a_planted_two_point_lift_about_95_percent_of_the_time(
    epsilon: float | None,
) -> None:
    runs = _simulate(PLANTED, epsilon, seed=20261203)
    assert 0.92 <= _coverage(runs) <= 0.98
    assert _widest_ratio(runs) <= 1.2


@pytest.mark.parametrize("epsilon", [None, 1.0], ids=["exact", "epsilon-1"])
def test_without_a_lift_the_test_finds_one_in_at_most_8_percent_of_runs(
    epsilon: float | None,
) -> None:
    runs = _simulate(0.0, epsilon, seed=7)
    assert _false_positive_rate(runs) <= 0.08


def test_with_epsilon_the_noise_variance_widens_the_interval_by_what_it_adds() -> None:
    exact = _noise(None, 1)
    noisy = _noise(1.0, 1)
    treated = release_arm(ArmTruth(PER_ARM, 1200, 0, 0), MIN_AUDIENCE, exact)
    control = release_arm(ArmTruth(PER_ARM, 1000, 0, 0), MIN_AUDIENCE, exact)
    plain = lift.two_proportion_lift(1200, PER_ARM, 1000, PER_ARM)
    measured = with_lift(treated, control, exact).lift
    assert measured is not None
    assert measured.standard_error == pytest.approx(plain.standard_error)
    variance = noisy.count_variance()
    # Counts get half of epsilon at L1 sensitivity 4: scale 8.
    assert variance == pytest.approx(lift.discrete_laplace_variance(8.0))
    widened = lift.two_proportion_lift(
        1200, PER_ARM, 1000, PER_ARM, responders_variance=variance, people_variance=variance
    )
    added = sum(
        (variance + p * p * variance) / PER_ARM**2 for p in (0.12, 0.10)
    )  # delta method of x/n, per arm
    assert widened.standard_error**2 == pytest.approx(plain.standard_error**2 + added)


def _empirical_variance(draw: Callable[[], int], n: int) -> float:
    values = np.array([draw() for _ in range(n)], dtype=np.float64)
    return float(values.var())


def test_the_opendp_mechanism_has_the_variance_the_interval_assumes() -> None:
    mechanism = rules.default_noise()
    scale = 8.0  # counts at epsilon 1: half of it at sensitivity 4
    measured = _empirical_variance(lambda: mechanism(0, 0.5, 4), 4000)
    # The sample variance of 4,000 Laplace-like draws is within about 4 % (one sd): 15 % is
    # four standard deviations.
    assert measured == pytest.approx(lift.discrete_laplace_variance(scale), rel=0.15)
    stub = SeededLaplace(3)
    assert _empirical_variance(lambda: stub(0, 0.5, 4), 4000) == pytest.approx(
        lift.discrete_laplace_variance(scale), rel=0.15
    )


def test_responders_whose_complement_is_small_are_suppressed() -> None:
    exact = _noise(None, 1)
    # 95 of 100 responded: the 5 who did not would be told by people - responders.
    nearly_all = release_arm(ArmTruth(100, 95, 950, 0), 50, exact)
    assert nearly_all.people == 100
    assert nearly_all.responders is None
    assert nearly_all.points is None
    few = release_arm(ArmTruth(100, 7, 70, 0), 50, exact)
    assert (few.people, few.responders, few.points) == (100, None, None)
    small_arm = release_arm(ArmTruth(40, 20, 200, 0), 50, exact)
    assert small_arm.suppressed
    assert small_arm.responders is None
    shown = release_arm(ArmTruth(200, 120, 1200, 300), 50, exact)
    assert (shown.people, shown.responders, shown.points, shown.amount_minor) == (
        200,
        120,
        1200,
        300,
    )


def test_a_suppressed_input_suppresses_the_lift() -> None:
    exact = _noise(None, 1)
    treated = release_arm(ArmTruth(500, 200, 0, 0), 50, exact)
    control = release_arm(ArmTruth(60, 3, 0, 0), 50, exact)
    assert with_lift(treated, control, exact).lift is None


def test_one_results_read_spends_exactly_its_epsilon_across_its_parts() -> None:
    assert sum(rules.RESULTS_EPSILON_SHARES.values()) == pytest.approx(1.0)
    mechanism = rules.default_noise()
    for segments in (False, True):
        for measure, cap in (("counts", 1), ("points", 10_000), ("amount_minor", 100_000)):
            sensitivity = rules.results_sensitivity(measure, cap, segments=segments)  # type: ignore[arg-type]
            share = rules.RESULTS_EPSILON_SHARES[measure]  # type: ignore[index]
            width: rules.Width = "i32" if measure == "counts" else "i64"
            spent = float(mechanism.measurement(share, sensitivity, width).map(sensitivity))
            assert spent <= share + 1e-9
