"""The privacy rules every shown count passes through (DESIGN.md "Matching semantics").

This module is the reference for what a partner may learn from an answer. It is pure (no I/O,
no clock) and imports nothing of the project (an architecture test enforces it). All decisions
are taken on TRUE counts; noise, when asked for, is added only to what is already shown.

Threshold
    A count is shown only when it is at least the partnership's ``min_audience``; otherwise it
    is published as ``{"count": null, "suppressed": true}``. A count of 0 is suppressed too, so
    "nobody" cannot be told apart from "a few people".

Cell suppression (breakdowns)
    A breakdown has a published total and one cell per combination of attribute values (a key
    of 1 or 2 values, ``None`` for "no value"). Only non-zero cells exist. A *line* is a set of
    cells whose sum an attacker can learn: the whole table (the total), and for 2-D keys every
    row (cells sharing ``key[0]``) and every column (cells sharing ``key[1]``), because each
    marginal is the answer to a 1-D query over the same people.

    1. If the total is below ``min_audience``, every cell is suppressed.
    2. Primary: every cell below ``min_audience`` is suppressed.
    3. Complementary: in every line, the suppressed cells must be either none, or at least two
       cells whose counts sum to at least ``min_audience`` and to more than the number of
       suppressed cells. The line's sum minus its shown cells reveals the sum of its suppressed
       cells, so that sum must be neither a small count nor a single cell's count; and since a
       listed cell holds at least one person, k suppressed cells summing to exactly k would all
       be known to hold one. While a line breaks this, its smallest shown cell is suppressed
       (ties broken by key order, so the result is deterministic), until the line holds or all
       of its cells are suppressed. Lines are revisited until nothing changes; this terminates
       because cells are only ever added.
    4. Linked lines (2-D only): rows and columns together can still pin down a value that
       every single line protects, e.g. a suppressed cell bridging two blocks of suppressed
       cells equals a signed sum of marginals, or two suppressed cells whose derived sum is 2
       must both hold 1. The attacker is assumed to know the total, the shown cells, the row and
       column sums that the 1-D answers show (rules 1-3 applied to the marginals), and that
       every listed cell holds at least one person. The secrets are the cells and the hidden
       marginals below ``min_audience``; each must keep at least two possible values. That is
       decided exactly: tables with the same published data differ by +1/-1 moves around
       cycles of rows and columns (see ``_can_change``). While a secret has a single possible
       value, the smallest shown cell whose suppression frees it is suppressed (or, when no
       single cell does, the smallest shown cell), and rule 3 runs again. Secrets pinned even
       with the whole table suppressed are left alone (see the known limit).

    Known limit: the 1-D answers alone can pin a small cell whatever the 2-D answer hides (for
    example ``row a - column x`` when row ``a`` has one cell besides ``(a, x)`` and column
    ``x`` has no other cell). Rule 4 leaves such cells alone, since suppressing more of the 2-D
    table cannot help; preventing it needs a rule across breakdowns.

Noise
    With an ``epsilon``, every shown count gets integer noise from the discrete Laplace
    mechanism of OpenDP (``make_laplace`` on an integer domain: no floating-point sampler,
    whose low bits leak the true value, Mironov 2012) of scale ``sensitivity/epsilon``, so
    that the measurement's privacy map gives exactly ``epsilon`` at the query's sensitivity. A
    total alone has sensitivity 1 (one person changes it by one). A breakdown has sensitivity
    2: one person changes the total and exactly one cell, so the answer vector moves by 2 in
    L1 norm, and noising each shown count with scale ``2/epsilon`` keeps the whole answer
    epsilon-differentially private. Counts are noised as 32-bit integers, sums as 64-bit ones.

    The discrete Laplace returns the exact count with probability ``tanh(epsilon/(2 *
    sensitivity))`` (about 0.46 at epsilon 1 for a total): an exact answer is no leak, it is
    the distribution. Noisy counts are NOT clamped at 0: the noise is unbiased only unclamped
    (a clamp is harmless post-processing for privacy, but it pushes small counts up), and a
    shown count is at least ``min_audience`` (never below the floor of 10) before noise, so
    a negative answer needs noise beyond ``-min_audience``, which is rare and says only that
    the noise was large.

    The mechanism is passed in (:class:`NoiseMechanism`; :class:`DiscreteLaplace` by
    default). OpenDP has no seed, so tests pass a stub to make the noise observable.

    What noise does not cover: the threshold, complementary suppression and the refusals
    (budget, differencing) are decided on TRUE counts and are not differentially private.
    They are protected by the threshold rules themselves (nothing below ``min_audience`` is
    shown, no difference of fewer than ``min_audience`` people is answered), not by epsilon:
    whether a cell is shown, or a question refused, tells something about the true counts
    that epsilon does not account for.

Offer results
    A results read (DESIGN.md "Offer measurement") releases, for both sides, both arms'
    ``people`` and ``responders`` and their ``points`` and ``amount_minor`` sums, each sum
    clamped per person at a configured cap C. The unit protected is one matched group, which
    holds a person on each side: it moves one arm's people and responders on each side by at
    most 1 each (L1 4 over the counts) and each side's sums by at most C (L1 2C). A segment
    breakdown (one side's own attribute) adds that person's segment cell: +2 and +C. One read
    spends the partnership's ``epsilon`` in total, split by :data:`RESULTS_EPSILON_SHARES`
    (counts half, each sum a quarter), each part noised at its L1 sensitivity
    (:func:`results_sensitivity`), so the read is epsilon-DP by composition.

Budget
    Each answer that noises spends its ``epsilon`` from one budget per partnership and UTC
    calendar period (hour, day, week starting Monday 00:00, calendar month), whoever asks:
    the members' overlaps and the admin's matrix draw on the same budget. An answer is refused
    when ``epsilon`` exceeds what is left (with a tolerance of 1e-9 so that ten spends of 0.1
    fill a budget of 1.0 exactly).

Differencing
    The TRUE counts of a query are compared with those of the same query answered earlier. If
    the total or any cell (over both answers' keys, a missing key counting as 0) changed by at
    least one but fewer than ``min_audience`` people, the new answer is refused: subtracting the
    two answers would describe those few people. The reason given names no count but the
    threshold, and not which cell changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from threading import Lock
from typing import Any, Literal, Protocol

import opendp.prelude as dp

__all__ = [
    "RESULTS_EPSILON_SHARES",
    "Answer",
    "Budget",
    "CellKey",
    "DiscreteLaplace",
    "NoiseMechanism",
    "Period",
    "Shown",
    "Width",
    "answer",
    "default_noise",
    "differencing_violation",
    "period_bounds",
    "results_sensitivity",
    "suppress_cells",
    "threshold",
]

CellKey = tuple[str | None, ...]
Period = Literal["hour", "day", "week", "month"]

BUDGET_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Shown:
    """One published count: the number, or ``None`` with ``suppressed`` set."""

    count: int | None
    suppressed: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """A published total and, for a breakdown, its cells sorted by key (``None`` last)."""

    total: Shown
    cells: list[tuple[CellKey, Shown]]


def threshold(count: int, min_audience: int) -> Shown:
    """Show ``count`` only when it is at least ``min_audience`` (0 is suppressed too)."""
    if count < min_audience:
        return Shown(None, True)
    return Shown(count, False)


def key_order(key: CellKey) -> tuple[tuple[bool, str], ...]:
    """Sort key for cell keys: by value within each dimension, ``None`` last."""
    return tuple((value is None, value or "") for value in key)


def suppress_cells(
    cells: Mapping[CellKey, int], total: int, min_audience: int
) -> dict[CellKey, bool]:
    """Return, for every cell, whether it is suppressed (rules 1-4 of the module docstring)."""
    dimensions = {len(key) for key in cells}
    if len(dimensions) > 1 or not dimensions <= {1, 2}:
        raise ValueError("cell keys must all have 1 or 2 values")
    if total < min_audience:
        return dict.fromkeys(cells, True)
    suppressed = {key for key, count in cells.items() if count < min_audience}
    lines = _lines(cells)
    _protect_lines(lines, cells, suppressed, min_audience)
    if dimensions == {2}:
        _protect_linked_lines(cells, total, min_audience, suppressed)
    return {key: key in suppressed for key in cells}


def _lines(cells: Mapping[CellKey, int]) -> list[list[CellKey]]:
    """The sets of cells whose sums are published: the table, then each row and column."""
    lines = [list(cells)]
    dimensions = {len(key) for key in cells}
    if dimensions != {2}:
        return lines
    for axis in (0, 1):
        groups: dict[str | None, list[CellKey]] = {}
        for key in cells:
            groups.setdefault(key[axis], []).append(key)
        lines.extend(groups.values())
    return lines


def _line_is_safe(hidden: list[int], min_audience: int) -> bool:
    if not hidden:
        return True
    hidden_sum = sum(hidden)
    return len(hidden) >= 2 and hidden_sum >= min_audience and hidden_sum > len(hidden)


def _smallest_first(keys: Iterable[CellKey], cells: Mapping[CellKey, int]) -> list[CellKey]:
    return sorted(keys, key=lambda key: (cells[key], key_order(key)))


def _protect_lines(
    lines: list[list[CellKey]],
    cells: Mapping[CellKey, int],
    suppressed: set[CellKey],
    min_audience: int,
) -> None:
    """Rule 3, in place: suppress the smallest shown cells until every line is safe."""
    changed = True
    while changed:
        changed = False
        for line in lines:
            hidden = [cells[key] for key in line if key in suppressed]
            shown = _smallest_first((key for key in line if key not in suppressed), cells)
            for key in shown:
                if _line_is_safe(hidden, min_audience):
                    break
                suppressed.add(key)
                hidden.append(cells[key])
                changed = True


def _protect_linked_lines(
    cells: Mapping[CellKey, int], total: int, min_audience: int, suppressed: set[CellKey]
) -> None:
    """Rule 4, in place: every small cell and small hidden marginal keeps a second value."""
    published, small_marginals = _marginal_answers(cells, total, min_audience)
    small_cells = [
        _cell_edge(key, cells) for key in _smallest_first(cells, cells) if cells[key] < min_audience
    ]
    everything = set(cells)
    secrets = [
        secret
        for secret in small_cells + small_marginals
        if _can_change(secret, cells, everything, published)
    ]
    lines = _lines(cells)
    while True:
        stuck = next(
            (secret for secret in secrets if not _can_change(secret, cells, suppressed, published)),
            None,
        )
        if stuck is None:
            return
        shown = _smallest_first((key for key in cells if key not in suppressed), cells)
        freeing = (key for key in shown if _can_change(stuck, cells, suppressed | {key}, published))
        suppressed.add(next(freeing, shown[0]))
        _protect_lines(lines, cells, suppressed, min_audience)


# Rule 4 works on a bipartite graph: nodes are rows and columns, edges are suppressed cells
# (plus slack edges, see `_can_change`). An edge is (row end, column end, name, can go down).
Node = tuple[str, str | None]
Edge = tuple[Node, Node, object, bool]
ROW_SLACK: Node = ("row slack", None)
COLUMN_SLACK: Node = ("column slack", None)


def _cell_edge(key: CellKey, cells: Mapping[CellKey, int]) -> Edge:
    return ("row", key[0]), ("column", key[1]), key, cells[key] >= 2


def _slack_edge(node: Node) -> Edge:
    if node[0] == "row":
        return node, COLUMN_SLACK, node, True
    return ROW_SLACK, node, node, True


def _marginal_answers(
    cells: Mapping[CellKey, int], total: int, min_audience: int
) -> tuple[set[Node], list[Edge]]:
    """The rows and columns whose sums 1-D answers show, and slack edges of the small ones."""
    published: set[Node] = set()
    small: list[Edge] = []
    for axis, side in ((0, "row"), (1, "column")):
        marginals: dict[CellKey, int] = {}
        for key, count in cells.items():
            marginals[(key[axis],)] = marginals.get((key[axis],), 0) + count
        hidden = suppress_cells(marginals, total, min_audience)
        for margin in sorted(marginals, key=key_order):
            node = (side, margin[0])
            if not hidden[margin]:
                published.add(node)
            elif marginals[margin] < min_audience:
                small.append(_slack_edge(node))
    return published, small


def _can_change(
    secret: Edge, cells: Mapping[CellKey, int], suppressed: set[CellKey], published: set[Node]
) -> bool:
    """Whether another table with the same published data gives ``secret`` another value.

    Every published row and column (and the total) fixes the sum of its suppressed cells. A
    row whose sum no answer shows hangs on one extra column node by a free slack edge (its sum
    may change, but the total fixes the sum of all such rows), and such columns likewise on one
    extra row node. Tables with the same published data differ by +1/-1 moves alternating
    around cycles of this graph (the incidence matrix is totally unimodular), and a -1 is
    possible only on a cell of at least 2, since every listed cell holds someone. So a value
    can change exactly when its edge lies on such a cycle: arcs run row to column for +1 and
    column to row for -1.
    """
    arcs: dict[Node, list[tuple[Node, object]]] = {}
    edges = [_cell_edge(key, cells) for key in suppressed]
    ends = {node for row, column, _, _ in edges for node in (row, column)}
    edges += [_slack_edge(node) for node in ends - published]
    for row, column, name, can_go_down in edges:
        arcs.setdefault(row, []).append((column, name))
        if can_go_down:
            arcs.setdefault(column, []).append((row, name))
    row, column, name, can_go_down = secret
    up = _path(arcs, column, row, avoid=name)
    return up or (can_go_down and _path(arcs, row, column, avoid=name))


def _path(
    arcs: Mapping[Node, list[tuple[Node, object]]], start: Node, end: Node, avoid: object
) -> bool:
    """Whether ``end`` can be reached from ``start`` without the edge named ``avoid``."""
    seen, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        if node == end:
            return True
        for following, name in arcs.get(node, []):
            if name != avoid and following not in seen:
                seen.add(following)
                frontier.append(following)
    return False


Width = Literal["i32", "i64"]  # counts fit 32 bits; sums (points, amounts) need 64


class NoiseMechanism(Protocol):
    """Releases ``value`` with integer noise: epsilon-DP for a query of L1 ``sensitivity``."""

    def __call__(self, value: int, epsilon: float, sensitivity: int, width: Width = "i32") -> int:
        """``value`` plus noise of scale ``sensitivity/epsilon``."""
        ...


class DiscreteLaplace:
    """OpenDP's discrete Laplace mechanism, one measurement per (scale, width), built once.

    Building a measurement costs about as much as drawing from it, and answers reuse a few
    scales, so they are cached. Each is checked on construction: its privacy map at the
    query's sensitivity must be the epsilon the budget is charged (up to float rounding).
    """

    def __init__(self) -> None:
        dp.enable_features("contrib")  # make_laplace is in OpenDP's contrib set
        self._measurements: dict[tuple[float, Width], Any] = {}
        self._checked: set[tuple[float, int, Width]] = set()  # (epsilon, sensitivity, width)
        self._lock = Lock()  # answers are noised on several threads

    def __call__(self, value: int, epsilon: float, sensitivity: int, width: Width = "i32") -> int:
        """``value`` plus a discrete Laplace draw of scale ``sensitivity/epsilon``."""
        return int(self.measurement(epsilon, sensitivity, width)(int(value)))

    def measurement(self, epsilon: float, sensitivity: int, width: Width = "i32") -> Any:
        """The cached OpenDP measurement for ``epsilon`` at ``sensitivity``."""
        if not epsilon > 0 or sensitivity <= 0:
            raise ValueError("epsilon and sensitivity must be positive")
        scale = sensitivity / epsilon
        with self._lock:
            found = self._measurements.get((scale, width))
            if found is None:
                found = dp.m.make_laplace(
                    dp.atom_domain(T=width), dp.absolute_distance(T=width), scale=scale
                )
                self._measurements[(scale, width)] = found
            if (epsilon, sensitivity, width) not in self._checked:
                # The privacy map costs about two draws: checked once per use.
                spent = float(found.map(sensitivity))
                if spent > epsilon + BUDGET_TOLERANCE:
                    raise ValueError(f"the mechanism spends {spent}, more than epsilon {epsilon}")
                self._checked.add((epsilon, sensitivity, width))
        return found


def answer(
    total: int,
    cells: Mapping[CellKey, int] | None,
    min_audience: int,
    *,
    epsilon: float | None = None,
    noise: NoiseMechanism | None = None,
) -> Answer:
    """Threshold the total, suppress cells, then noise what is shown when ``epsilon`` is given.

    Every decision uses the true counts. The sensitivity is 1 for a total alone and 2 for a
    breakdown (one person changes the total and one cell). ``noise`` defaults to OpenDP's
    discrete Laplace.
    """
    sensitivity = 1 if cells is None else 2
    mechanism = noise or default_noise()

    def publish(count: int, suppressed: bool) -> Shown:
        if suppressed:
            return Shown(None, True)
        if epsilon is None:
            return Shown(count, False)
        return Shown(mechanism(count, epsilon, sensitivity), False)

    shown_total = publish(total, total < min_audience)
    if cells is None:
        return Answer(shown_total, [])
    flags = suppress_cells(cells, total, min_audience)
    ordered = sorted(cells, key=key_order)
    return Answer(shown_total, [(key, publish(cells[key], flags[key])) for key in ordered])


ResultMeasure = Literal["counts", "points", "amount_minor"]
RESULTS_EPSILON_SHARES: dict[ResultMeasure, float] = {
    "counts": 0.5,
    "points": 0.25,
    "amount_minor": 0.25,
}


def results_sensitivity(measure: ResultMeasure, cap: int, *, segments: bool) -> int:
    """L1 sensitivity of one results read's ``measure`` (see "Offer results" above): counts
    4 (6 with a segment breakdown), sums 2 caps (3 with a breakdown)."""
    if measure == "counts":
        return 6 if segments else 4
    if cap <= 0:
        raise ValueError("a sum's per-person cap is positive")
    return (3 if segments else 2) * cap


@cache
def default_noise() -> DiscreteLaplace:
    """One process-wide mechanism, so its measurements are built once."""
    return DiscreteLaplace()


@dataclass(frozen=True, slots=True)
class Budget:
    """An epsilon budget for one period: ``total`` granted, ``spent`` so far."""

    total: float
    spent: float

    @property
    def left(self) -> float:
        return self.total - self.spent

    def can_spend(self, epsilon: float) -> bool:
        """Whether ``epsilon`` fits in what is left (float sums get a 1e-9 tolerance)."""
        return epsilon <= self.left + BUDGET_TOLERANCE


def period_bounds(now: datetime, period: Period) -> tuple[datetime, datetime]:
    """The UTC calendar period ``[start, end)`` containing ``now`` (which must be tz-aware)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    utc = now.astimezone(UTC)
    if period == "hour":
        start = utc.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    midnight = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight, midnight + timedelta(days=1)
    if period == "week":
        start = midnight - timedelta(days=midnight.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = midnight.replace(day=1)
        year, month = divmod(start.month, 12)
        return start, start.replace(year=start.year + year, month=month + 1)
    raise ValueError(f"unknown period {period!r}")


def differencing_violation(
    previous: Mapping[CellKey, int],
    previous_total: int,
    current: Mapping[CellKey, int],
    current_total: int,
    min_audience: int,
) -> str | None:
    """``None`` if the current answer may be given, else why not (no counts, no cell named).

    Both answers are TRUE counts of the same query. A change of 1 to ``min_audience - 1``
    people in the total or any cell (a missing cell counts as 0) is refused.
    """
    differences = [current_total - previous_total]
    differences += [current.get(key, 0) - previous.get(key, 0) for key in {*previous, *current}]
    if any(0 < abs(difference) < min_audience for difference in differences):
        return (
            "this answer would differ from an earlier answer to the same query by fewer than "
            f"{min_audience} people, which would single them out"
        )
    return None
