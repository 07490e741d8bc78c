"""Charts drawn on the server: the geometry of SVG bar and lift charts and a heatmap's colour
classes.

No JavaScript and no inline styles (the console's Content-Security-Policy forbids both): the
templates write SVG elements from these numbers and colour by CSS class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

HEAT_CLASSES = 6


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str
    label: str


@dataclass(slots=True)
class BarChart:
    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    x_labels: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    empty: bool = True


def grouped_bars(
    days: list[date],
    values: dict[tuple[date, str], int],
    series: list[str],
    *,
    width: int = 880,
    height: int = 260,
) -> BarChart:
    """Bars per day, one per series side by side, on a shared linear axis from zero."""
    left, right, top, bottom = 56, 8, 10, 28
    chart = BarChart(width=width, height=height, series=series)
    peak = max((abs(v) for v in values.values()), default=0)
    chart.empty = peak == 0
    scale_max = _nice_ceiling(peak) if peak else 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / max(1, len(days))
    bar_w = max(1.0, (slot * 0.8) / max(1, len(series)))
    for i, day in enumerate(days):
        x0 = left + i * slot + slot * 0.1
        for j, name in enumerate(series):
            value = abs(values.get((day, name), 0))
            h = plot_h * value / scale_max
            chart.bars.append(
                Bar(
                    x=round(x0 + j * bar_w, 2),
                    y=round(top + plot_h - h, 2),
                    width=round(bar_w, 2),
                    height=round(h, 2),
                    series=name,
                    label=f"{day.isoformat()} {name}: {values.get((day, name), 0):,} points",
                )
            )
        every = max(1, len(days) // 10)
        if i % every == 0:
            chart.x_labels.append((round(left + i * slot + slot / 2, 2), day.strftime("%d %b")))
    for k in range(5):
        tick = scale_max * k / 4
        chart.y_ticks.append((round(top + plot_h - plot_h * k / 4, 2), f"{tick:,.0f}"))
    return chart


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``."""
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def day_range(last: date, days: int) -> list[date]:
    return [last - timedelta(days=days - 1 - i) for i in range(days)]


def heat_class(count: int | None, peak: int) -> str:
    """The CSS class of a heatmap cell: ``heat-0`` (lowest) to ``heat-5`` (the peak)."""
    if count is None or peak <= 0:
        return "heat-0"
    return f"heat-{min(HEAT_CLASSES - 1, int((HEAT_CLASSES - 1) * count / peak + 0.5))}"


@dataclass(frozen=True, slots=True)
class LiftRow:
    """One line of a lift chart: a side (or segment) with its arms' rates and the lift."""

    label: str
    treated: float | None  # response rates (None: suppressed)
    control: float | None
    lift: float | None
    low: float | None  # the lift's 95 % interval
    high: float | None


@dataclass(frozen=True, slots=True)
class LiftMark:
    y: float
    label: str
    treated_w: float | None  # bar widths in the rates panel
    control_w: float | None
    dot: float | None  # x of the lift, and its interval, in the lift panel
    low: float | None
    high: float | None
    title: str


@dataclass(slots=True)
class LiftChart:
    width: int
    height: int
    rate_x: float  # the rates panel starts here; the lift panel at lift_x
    rate_w: float
    lift_x: float
    lift_w: float
    zero: float  # x of a zero lift
    rows: list[LiftMark] = field(default_factory=list)
    rate_ticks: list[tuple[float, str]] = field(default_factory=list)
    lift_ticks: list[tuple[float, str]] = field(default_factory=list)


def lift_chart(rows: list[LiftRow], *, width: int = 880, row_height: int = 46) -> LiftChart:
    """Per row: treated and control response rates as two bars on one axis from zero, and the
    lift as a dot with its 95 % interval on an axis centred on zero (a whisker crossing the
    zero line: not significant at 5 %)."""
    label_w, gap, top = 180, 24, 18
    rate_w = lift_w = (width - label_w - 2 * gap) / 2
    rate_x, lift_x = label_w, label_w + rate_w + 2 * gap
    peak_rate = max((r for row in rows for r in (row.treated, row.control) if r), default=0.0)
    rate_max = _nice_ceiling(peak_rate * 100) / 100 if peak_rate else 1.0
    spread = max(
        (abs(v) for row in rows for v in (row.low, row.high, row.lift) if v is not None),
        default=0.0,
    )
    lift_max = _nice_ceiling(spread * 100) / 100 if spread else 0.01
    zero = lift_x + lift_w / 2
    chart = LiftChart(
        width=width,
        height=top + row_height * max(1, len(rows)) + 24,
        rate_x=rate_x,
        rate_w=rate_w,
        lift_x=lift_x,
        lift_w=lift_w,
        zero=round(zero, 2),
    )

    def rate(value: float | None) -> float | None:
        return None if value is None else round(rate_w * min(value, rate_max) / rate_max, 2)

    def lift_at(value: float | None) -> float | None:
        if value is None:
            return None
        return round(zero + (lift_w / 2) * max(-1.0, min(1.0, value / lift_max)), 2)

    for i, row in enumerate(rows):
        shown = "suppressed" if row.lift is None else f"{row.lift * 100:+.2f} pts"
        interval = (
            f" (95% CI {row.low * 100:+.2f} to {row.high * 100:+.2f})"
            if row.low is not None and row.high is not None
            else ""
        )
        chart.rows.append(
            LiftMark(
                y=top + i * row_height,
                label=row.label,
                treated_w=rate(row.treated),
                control_w=rate(row.control),
                dot=lift_at(row.lift),
                low=lift_at(row.low),
                high=lift_at(row.high),
                title=f"{row.label}: lift {shown}{interval}",
            )
        )
    for k in range(5):
        chart.rate_ticks.append(
            (round(rate_x + rate_w * k / 4, 2), f"{rate_max * 100 * k / 4:.0f}%")
        )
        value = -lift_max + 2 * lift_max * k / 4
        chart.lift_ticks.append((round(lift_x + lift_w * k / 4, 2), f"{value * 100:+.1f}"))
    return chart
