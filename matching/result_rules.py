"""What an offer's results may show: thresholds, complementary suppression and noise of the
arms' figures, then the lift from the released figures only (DESIGN.md "Offer measurement").

Per arm (treated or control of one side) the true figures are ``people``, ``responders`` and
the clamped ``points`` and ``amount_minor`` sums of the responders. Released as overlaps are:

* ``people`` is shown when at least ``min_audience`` (else the whole arm is suppressed);
* ``responders`` is a cell of the table {responded, did not} whose total is ``people``: it is
  suppressed when it, or its complement ``people - responders``, would be a small count
  (:func:`matching.rules.suppress_cells`, rules 1-3), since the shown people count would
  reveal the one from the other;
* the sums are shown only with their responders count (a sum over a few people is theirs);
* a segment breakdown is the 2-D table (segment by responded) with the arm's people as total:
  segment people are its row sums (shown as a 1-D breakdown would show them), segment
  responders its cells (rules 1-4: complementary and linked-line suppression);
* with ``epsilon``, every shown figure gets OpenDP discrete Laplace noise at the read's L1
  sensitivity for its share of epsilon (:func:`matching.rules.results_sensitivity`).

The lift (:mod:`matching.lift`) is computed only when both arms' people and responders are
shown, from the released (noised) values, with the noise variance inside the interval; it is
suppressed otherwise.

Pure: imports only the other pure modules of the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from matching import lift, rules

__all__ = [
    "ArmRelease",
    "ArmTruth",
    "Release",
    "ResultsNoise",
    "release_arm",
    "release_segments",
    "with_lift",
]

RESPONDED, DID_NOT = "responded", "did-not"


@dataclass(frozen=True, slots=True)
class ArmTruth:
    """One arm's TRUE figures (sums already clamped per person)."""

    people: int
    responders: int
    points: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class ArmRelease:
    """One arm's released figures (None: suppressed)."""

    people: int | None
    responders: int | None
    points: int | None
    amount_minor: int | None

    @property
    def suppressed(self) -> bool:
        return self.people is None

    @property
    def response_rate(self) -> float | None:
        if self.people is None or self.responders is None or self.people <= 0:
            return None
        return min(1.0, max(0.0, self.responders / self.people))


@dataclass(frozen=True, slots=True)
class ResultsNoise:
    """The noise of one results read: None epsilon means none."""

    epsilon: float | None
    mechanism: rules.NoiseMechanism
    points_cap: int
    amount_cap: int
    segments: bool

    def _part(self, measure: rules.ResultMeasure) -> tuple[float, int]:
        assert self.epsilon is not None
        cap = {"counts": 1, "points": self.points_cap, "amount_minor": self.amount_cap}[measure]
        return (
            self.epsilon * rules.RESULTS_EPSILON_SHARES[measure],
            rules.results_sensitivity(measure, cap, segments=self.segments),
        )

    def apply(self, value: int, measure: rules.ResultMeasure) -> int:
        if self.epsilon is None:
            return value
        epsilon, sensitivity = self._part(measure)
        width: rules.Width = "i32" if measure == "counts" else "i64"
        return self.mechanism(value, epsilon, sensitivity, width)

    def count_variance(self) -> float:
        """The variance of the noise on each released count (0 without noise)."""
        if self.epsilon is None:
            return 0.0
        epsilon, sensitivity = self._part("counts")
        return lift.discrete_laplace_variance(sensitivity / epsilon)


def _release(
    truth: ArmTruth, people_shown: bool, responders_shown: bool, noise: ResultsNoise
) -> ArmRelease:
    if not people_shown:
        return ArmRelease(None, None, None, None)
    people = noise.apply(truth.people, "counts")
    if not responders_shown:
        return ArmRelease(people, None, None, None)
    return ArmRelease(
        people,
        noise.apply(truth.responders, "counts"),
        noise.apply(truth.points, "points"),
        noise.apply(truth.amount_minor, "amount_minor"),
    )


def _responded_table(
    by_segment: Mapping[str | None, ArmTruth],
) -> dict[rules.CellKey, int]:
    table: dict[rules.CellKey, int] = {}
    for segment, truth in by_segment.items():
        for answer, count in (
            (RESPONDED, truth.responders),
            (DID_NOT, truth.people - truth.responders),
        ):
            if count > 0:  # only non-zero cells exist, as in every breakdown
                table[(segment, answer)] = count
    return table


def release_arm(truth: ArmTruth, min_audience: int, noise: ResultsNoise) -> ArmRelease:
    """An arm's released figures (see the module docstring)."""
    people_shown = truth.people >= min_audience
    table = _responded_table({None: truth})
    hidden = rules.suppress_cells(
        {(key[1],): count for key, count in table.items()}, truth.people, min_audience
    )
    responders_shown = people_shown and truth.responders > 0 and not hidden[(RESPONDED,)]
    return _release(truth, people_shown, responders_shown, noise)


def release_segments(
    by_segment: Mapping[str | None, ArmTruth],
    min_audience: int,
    noise: ResultsNoise,
) -> dict[str | None, ArmRelease]:
    """Each segment's released figures for one arm (the arm's people are the total)."""
    total = sum(t.people for t in by_segment.values())
    rows = rules.suppress_cells(
        {(segment,): t.people for segment, t in by_segment.items() if t.people > 0},
        total,
        min_audience,
    )
    table = _responded_table(by_segment)
    cells = rules.suppress_cells(table, total, min_audience) if table else {}
    out: dict[str | None, ArmRelease] = {}
    for segment, truth in by_segment.items():
        people_shown = truth.people > 0 and not rows[(segment,)]
        responders_shown = (
            people_shown and (segment, RESPONDED) in cells and not cells[(segment, RESPONDED)]
        )
        out[segment] = _release(truth, people_shown, responders_shown, noise)
    return out


@dataclass(frozen=True, slots=True)
class Release:
    """Both arms of one side (or segment) as released, and their lift (None: suppressed)."""

    treated: ArmRelease
    control: ArmRelease
    lift: lift.Lift | None


def with_lift(treated: ArmRelease, control: ArmRelease, noise: ResultsNoise) -> Release:
    """The lift from the released figures, when every input is shown."""
    n_t, x_t, n_c, x_c = treated.people, treated.responders, control.people, control.responders
    if n_t is None or x_t is None or n_c is None or x_c is None or n_t <= 0 or n_c <= 0:
        return Release(treated, control, None)
    variance = noise.count_variance()
    measured = lift.two_proportion_lift(
        x_t,
        n_t,
        x_c,
        n_c,
        responders_variance=variance,
        people_variance=variance,
    )
    return Release(treated, control, measured)
