"""The operator pages render in headless Chromium (skipped where Chromium is not installed)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from scripts.screenshot_pages import chromium, screenshot_pages

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install -y chromium)"),
]


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", header[16:24])


def test_pages_screenshot(
    gateway_url: str, tmp_path: Path, settings: Any, admin_client: Any, redis_client: Any
) -> None:
    from datetime import timedelta
    from decimal import Decimal

    from gatewaysite.clock import now
    from usage.ingest import records_insert
    from usage.models import UsageRecord

    for n, (team, model, cost) in enumerate(
        [("red", "gpt-4o", "12.5"), ("blue", "claude", "7.25"), ("red", "mini", "0.4")]
    ):
        records_insert(
            [
                UsageRecord(
                    request_id=f"req_shot{n}",
                    created_at=now() - timedelta(minutes=n),
                    key_name=f"svc-{n}",
                    key_prefix=f"k{n}",
                    team=team,
                    model=model,
                    status="ok",
                    cost_usd=Decimal(cost),
                )
            ]
        )
    settings.WHITENOISE_USE_FINDERS = True  # the live server serves the apps' static files
    settings.WHITENOISE_AUTOREFRESH = True
    pngs = screenshot_pages(base_url=gateway_url, out=tmp_path, client=admin_client)
    assert [p.name for p in pngs] == ["admin-index.png", "overview.png", "latency-chart.png", "api-docs.png"]
    for png in pngs:
        assert _png_size(png) == (1280, 1800)
        assert png.stat().st_size > 20_000, f"{png.name} looks blank"
