"""Horizontal bar charts as inline SVG, drawn on the server (the admin loads no JavaScript)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

COLOR = "#417690"  # the admin's own blue
WIDTH = 560
LABEL_W, VALUE_W, BAR_H, GAP = 200, 90, 16, 6
TOP_N = 10


def bar_chart(items: list[tuple[str, Decimal | float]], *, unit: str = "$", top: int = TOP_N) -> dict[str, Any]:
    """The ``top`` largest items as bars (the rest summed into one "other" bar)."""
    ranked = sorted(items, key=lambda item: (-item[1], item[0]))
    shown = ranked[:top]
    rest = ranked[top:]
    if rest:
        shown.append((f"{len(rest)} others", sum((value for _, value in rest), Decimal(0))))
    peak = max((float(value) for _, value in shown), default=0.0)
    span = WIDTH - LABEL_W - VALUE_W
    bars = []
    for index, (label, value) in enumerate(shown):
        y = index * (BAR_H + GAP)
        bars.append(
            {
                "label": label if len(label) <= 30 else label[:29] + "…",
                "title": label,
                "y": y,
                "text_y": y + BAR_H - 4,
                "width": round(span * float(value) / peak, 1) if peak > 0 else 0,
                "value": f"{unit}{value:,.2f}" if unit == "$" else f"{value:,}{unit}",
            }
        )
    return {
        "bars": bars,
        "width": WIDTH,
        "height": max(1, len(bars)) * (BAR_H + GAP),
        "bar_x": LABEL_W,
        "bar_h": BAR_H,
        "value_x": WIDTH - VALUE_W + 6,
        "color": COLOR,
    }
