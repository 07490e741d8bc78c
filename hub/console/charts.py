"""Charts drawn on the server: the geometry of an SVG bar chart and a heatmap's colour classes.

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
