"""Metrics helpers: a clean per-process metrics state and a parsed scrape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(autouse=True)
def _clean_metrics(settings: Any, tmp_path: Path) -> Iterator[None]:
    from monitoring.recording import process_metrics

    settings.GATEWAY = {**settings.GATEWAY, "METRICS_DIR": str(tmp_path / "metrics")}
    process_metrics.reset_for_tests()
    yield
    process_metrics.reset_for_tests()


class Scrape:
    """Samples of one ``/metrics`` text, looked up by name and (a subset of) labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, metric: str, /, **labels: str) -> float:
        return sum(s.value for s in self.samples if s.name == metric and labels.items() <= s.labels.items())

    def series(self, metric: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == metric]


def scrape(url: str, **headers: str) -> Scrape:
    import urllib.request

    request = urllib.request.Request(url + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain")
        return Scrape(response.read().decode())
