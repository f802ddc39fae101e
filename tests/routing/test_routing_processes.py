"""``cost-slo`` and ``least-busy`` across real gunicorn workers (two gevent processes).

cost-slo: three loopback upstreams priced 1x/3x/10x answer in 800/200/50 ms; the
objective is 300 ms. At least 95% of requests go to the 3x one, and exploration takes no
more than its budget (3% of choices, plus one per worker); when it slows past the
objective traffic moves to the 10x one, and comes back when it recovers. The live p95
each worker reads is shared through Redis, so both workers follow.

least-busy: long streams opened one after another spread over the two deployments,
whichever worker took them, and every worker's explain shows the same in-flight counts.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.http_server import Received, Reply
from tests.fakes.openai_server import FakeOpenAI, completion_json, stream_events
from tests.procs import LiveGateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o-mini"


class TimedOpenAI(FakeOpenAI):
    """Answers within ``delay`` seconds - uniformly from half of it, so ``delay`` is the p95 - (changeable
    while the test runs); streams send ``events`` slowly."""

    def __init__(self, delay: float = 0.0, event_delay: float = 0.0, events: int = 4) -> None:
        super().__init__()
        self.delay = delay
        self.event_delay = event_delay
        self.events = events

    def default_reply(self, received: Received) -> Reply:
        body = received.body if isinstance(received.body, dict) else {}
        if body.get("stream"):
            words = [f" w{i}" for i in range(self.events)]
            return Reply(events=stream_events(words), event_delay=self.event_delay)
        return Reply(json=completion_json(), delay=random.uniform(self.delay / 2, self.delay))


def _gunicorn(tmp_path: Path) -> Iterator[LiveGateway]:
    server = start_gateway(tmp_path, workers=2)
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


def _post(url: str, secret: str, **extra: Any) -> requests.Response:
    return requests.post(
        url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20, **extra},
        headers={"Authorization": f"Bearer {secret}", "Connection": "close"},
        timeout=30,
        stream=bool(extra.get("stream")),
    )


def _choices(url: str, secret: str, count: int, pool: ThreadPoolExecutor) -> list[tuple[str, str]]:
    """(deployment, route reason) of each of ``count`` requests."""
    responses = list(pool.map(lambda _: _post(url, secret), range(count)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:2]
    return [(r.headers["x-gateway-deployment"], r.headers["x-gateway-route-reason"]) for r in responses]


def _served(url: str, secret: str, count: int, pool: ThreadPoolExecutor) -> Counter[str]:
    return Counter(deployment for deployment, _ in _choices(url, secret, count, pool))


def test_cost_slo_keeps_to_the_cheapest_deployment_within_the_objective_and_follows_it(
    tmp_path: Path, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> None:
    from routing.models import RoutingSettings

    upstreams = {"cheap": TimedOpenAI(0.8), "mid": TimedOpenAI(0.2), "fast": TimedOpenAI(0.05)}
    for server in upstreams.values():
        server.start()
    for name, (server, price) in zip(
        upstreams, ((upstreams["cheap"], "1"), (upstreams["mid"], "3"), (upstreams["fast"], "10")), strict=True
    ):
        provider = make_provider(name, base_url=server.url + "/v1", vendor=name, read_timeout=10.0)
        make_deployment(provider, MODEL, name=name, provider_model=MODEL)
        make_price(name, MODEL, price, price)
    RoutingSettings.objects.update_or_create(
        pk=1,
        defaults={"strategy": "cost-slo", "latency_slo_ms": 300, "slo_min_samples": 20, "slo_explore_percent": 3.0},
    )
    _, secret = issue_key()
    try:
        for gateway in _gunicorn(tmp_path):
            with ThreadPoolExecutor(8) as pool:
                _served(gateway.url, secret, 120, pool)  # warm-up: every deployment gets measured
                # ... and every worker sees it (samples are shared once a second): the steady
                # state starts when a batch goes to the 3x deployment, as the phases below wait
                deadline = time.monotonic() + 30
                while (batch := _served(gateway.url, secret, 24, pool))["mid"] < 0.9 * 24:
                    assert time.monotonic() < deadline, f"traffic did not settle on the 3x deployment: {batch}"
                steady = _choices(gateway.url, secret, 300, pool)
                reasons = Counter(steady)
                assert sum(n for (deployment, _), n in reasons.items() if deployment == "mid") >= 0.95 * 300, reasons
                # exploration is a budget: at most 3% of each worker's choices, plus the one choice of
                # credit a worker may have saved
                assert sum(n for (_, reason), n in reasons.items() if reason == "slo_explore") <= 0.03 * 300 + 2, (
                    reasons
                )

                upstreams["mid"].delay = 0.5  # past the objective
                deadline = time.monotonic() + 30
                while True:
                    batch = _served(gateway.url, secret, 24, pool)
                    if batch["fast"] >= 0.9 * 24:
                        break
                    assert time.monotonic() < deadline, f"traffic did not move to the 10x deployment: {batch}"

                upstreams["mid"].delay = 0.2  # back under it
                deadline = time.monotonic() + 60
                while True:
                    batch = _served(gateway.url, secret, 24, pool)
                    if batch["mid"] >= 0.9 * 24:
                        break
                    assert time.monotonic() < deadline, f"traffic did not come back to the 3x deployment: {batch}"
    finally:
        for server in upstreams.values():
            server.stop()


def test_least_busy_spreads_long_streams_across_workers(
    tmp_path: Path, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> None:
    from routing.models import RoutingSettings

    upstreams = {"a": TimedOpenAI(event_delay=0.5, events=30), "b": TimedOpenAI(event_delay=0.5, events=30)}
    for server in upstreams.values():
        server.start()
    for name, server in upstreams.items():
        provider = make_provider(name, base_url=server.url + "/v1", vendor="openai", read_timeout=10.0)
        make_deployment(provider, MODEL, name=name)
    make_price("openai", MODEL, "1", "1")
    RoutingSettings.objects.update_or_create(pk=1, defaults={"strategy": "least-busy"})
    _, secret = issue_key()
    streams: list[requests.Response] = []
    readers: list[Iterator[bytes]] = []  # kept: a dropped reader closes its connection
    try:
        for gateway in _gunicorn(tmp_path):
            for _ in range(4):
                response = _post(gateway.url, secret, stream=True)
                assert response.status_code == 200
                reader = response.iter_content(None)
                next(reader)  # the stream is open upstream
                readers.append(reader)
                streams.append(response)
                time.sleep(2.5)  # longer than a report takes to reach the other worker (two sync intervals)
            assert Counter(r.headers["x-gateway-deployment"] for r in streams) == {"a": 2, "b": 2}

            seen: dict[int, dict[str, int]] = {}
            deadline = time.monotonic() + 20
            while len(seen) < 2:
                assert time.monotonic() < deadline, f"explain did not reach both workers: {seen}"
                explained = requests.post(
                    gateway.url + "/v1/routing/explain",
                    json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
                    headers={"Authorization": f"Bearer {secret}", "Connection": "close"},
                    timeout=10,
                )
                assert explained.status_code == 200, explained.text
                time.sleep(0.05)  # the access log line is written after the response
                pid = gateway.served("/v1/routing/explain")[-1][0]
                seen[pid] = {c["deployment"]: c["in_flight"] for c in explained.json()["candidates"]}
            for pid, counts in seen.items():
                assert counts == {"a": 2, "b": 2}, (pid, seen)
    finally:
        for response in streams:
            response.close()
        for server in upstreams.values():
            server.stop()
