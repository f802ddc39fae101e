"""The admin's latency chart: p50 and p95 per deployment over time, as inline SVG.

Built from the per-minute rollups, merged into steps (a minute for the last hour, up to
an hour for a week) so a line has at most a few hundred points. Drawn server-side: the
admin loads no JavaScript or external assets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gatewaysite.clock import now
from routing.latency.histogram import Histogram
from routing.latency.rollup import minute_of
from routing.models import LatencyRollup

RANGES: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=1)),
    "6h": (timedelta(hours=6), timedelta(minutes=5)),
    "24h": (timedelta(hours=24), timedelta(minutes=15)),
    "7d": (timedelta(days=7), timedelta(hours=1)),
}
DEFAULT_RANGE = "6h"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
WIDTH, HEIGHT = 960, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 36


@dataclass
class _Step:
    histogram: Histogram = field(default_factory=Histogram)
    low: float | None = None
    high: float | None = None

    def add(self, sparse: Any, low: float | None, high: float | None) -> None:
        self.histogram.merge(sparse or ())
        if low is not None:
            self.low = low if self.low is None else min(self.low, low)
        if high is not None:
            self.high = high if self.high is None else max(self.high, high)

    def percentile(self, q: float) -> float | None:
        return self.histogram.percentile(q, low=self.low, high=self.high)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    for multiple in (1, 2, 2.5, 5, 10):
        if value <= multiple * base:
            return multiple * base
    return 10 * base


def latency_chart(*, range_name: str = DEFAULT_RANGE, until: datetime | None = None) -> dict[str, Any]:
    """Everything the template needs to draw the chart for ``range_name`` (unknown: the default)."""
    if range_name not in RANGES:
        range_name = DEFAULT_RANGE
    span, step = RANGES[range_name]
    until = minute_of(until or now()) + timedelta(minutes=1)
    since = until - span
    step_seconds = step.total_seconds()
    steps: dict[str, dict[int, _Step]] = {}
    rows = LatencyRollup.objects.filter(minute__gte=since, minute__lt=until).values_list(
        "deployment", "minute", "histogram", "min_ms", "max_ms"
    )
    for deployment, minute, histogram, low, high in rows.iterator(chunk_size=2000):
        index = int((minute - since).total_seconds() // step_seconds)
        per = steps.setdefault(deployment, {})
        per.setdefault(index, _Step()).add(histogram, low, high)

    series = []
    top = 0.0
    for deployment in sorted(steps):
        points = []
        for index in sorted(steps[deployment]):
            p50 = steps[deployment][index].percentile(0.5)
            p95 = steps[deployment][index].percentile(0.95)
            if p50 is None or p95 is None:
                continue
            points.append((index, p50, p95))
            top = max(top, p95)
        if points:
            series.append((deployment, points))
    y_max = _nice_ceiling(top)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(1, int(span / step))

    def x(index: float) -> float:
        return round(LEFT + plot_w * (index + 0.5) / count, 1)

    def y(ms: float) -> float:
        return round(TOP + plot_h * (1 - ms / y_max), 1)

    drawn = []
    for number, (deployment, points) in enumerate(series):
        last = points[-1]
        drawn.append(
            {
                "name": deployment,
                "color": COLORS[number % len(COLORS)],
                "p50": " ".join(f"{x(i)},{y(p50)}" for i, p50, _ in points),
                "p95": " ".join(f"{x(i)},{y(p95)}" for i, _, p95 in points),
                "last_p50": round(last[1], 1),
                "last_p95": round(last[2], 1),
                # A polyline through one point draws nothing: a lone step is drawn as dots.
                "dots": [{"x": x(i), "p50": y(p50), "p95": y(p95)} for i, p50, p95 in points]
                if len(points) == 1
                else [],
            }
        )
    y_ticks = [{"y": y(y_max * k / 4), "label": f"{y_max * k / 4:g} ms"} for k in range(5)]
    label = "%H:%M" if span <= timedelta(days=1) else "%m-%d %H:%M"
    x_ticks = []
    for k in range(7):
        position = (count - 1) * k / 6
        moment = since + step * position
        x_ticks.append({"x": x(position), "label": moment.strftime(label)})
    return {
        "range": range_name,
        "ranges": list(RANGES),
        "step": int(step_seconds // 60),
        "since": since,
        "until": until,
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "label_y": HEIGHT - BOTTOM + 22,
        "y_ticks": y_ticks,
        "x_ticks": x_ticks,
        "series": drawn,
    }
