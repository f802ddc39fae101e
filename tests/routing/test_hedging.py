"""Hedged requests against real loopback upstreams: who wins, who is cut, what is billed.

The p99 improvement is measured by the benchmark (bench/hedge.py, docs/benchmark.md), not
here: these tests assert the semantics - the second copy is sent only after the delay,
the first answer wins, the loser's connection is closed (the upstream sees its client
go away), both attempts are recorded and billed, and the budget caps the extra requests.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests

from tests.fakes.http_server import Reply
from tests.fakes.openai_server import FakeOpenAI
from usage.consumer import drain
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o-mini"


class StallingOpenAI(FakeOpenAI):
    """Waits ``stall`` seconds before answering, watching its client: a client that hangs up is noted."""

    def __init__(self, stall: float = 0.0) -> None:
        super().__init__()
        self.stall = stall
        self.hung_up = threading.Event()

    def send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        deadline = time.monotonic() + self.stall
        connection: socket.socket = handler.connection
        while time.monotonic() < deadline:
            connection.settimeout(0.02)
            try:
                if connection.recv(1, socket.MSG_PEEK) == b"":
                    self.hung_up.set()  # the gateway closed the connection: nothing to answer
                    return
            except TimeoutError:
                pass
            except OSError:
                self.hung_up.set()
                return
        connection.settimeout(None)
        super().send(handler, reply)


@pytest.fixture
def upstreams() -> Iterator[dict[str, StallingOpenAI]]:
    servers = {"slow": StallingOpenAI(stall=3.0).start(), "fast": StallingOpenAI().start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def gateway(upstreams: dict[str, StallingOpenAI], openai_chain: Any) -> dict[str, Any]:
    from routing.models import RoutingSettings

    RoutingSettings.objects.update_or_create(
        pk=1, defaults={"hedge_enabled": True, "hedge_delay_ms": 150, "hedge_budget_percent": 100.0}
    )
    return openai_chain(MODEL, upstreams, price=("1.00", "2.00"), read_timeout=10.0)


def post(gateway: dict[str, Any], *, stream: bool = False) -> requests.Response:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return requests.post(
        gateway["url"] + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {gateway['secret']}"},
        stream=stream,
        timeout=30,
    )


def test_slow_first_attempt_is_hedged_the_fast_copy_wins_and_the_slow_one_is_cut(gateway, upstreams) -> None:
    response = post(gateway)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-deployment"] == "fast"
    assert response.headers["x-gateway-hedged"] == "slow"
    assert response.headers["x-gateway-attempts"] == "2"
    assert len(upstreams["slow"].received) == 1 and len(upstreams["fast"].received) == 1
    # the loser's connection was closed by the gateway, long before its 3 s answer
    assert upstreams["slow"].hung_up.wait(2.0)

    from providers.http1 import idle_connections

    assert idle_connections(upstreams["slow"].url + "/v1/chat/completions") == 0  # the cut connection was not pooled

    drain(claim_idle_ms=0)
    record = UsageRecord.objects.get()
    assert record.hedged is True and record.deployment == "fast" and record.attempts == 2
    # the loser is billed its input tokens (estimated); the winner its real usage (12 in, 7 out)
    winner_cost = (Decimal(12) * Decimal("1.00") + Decimal(7) * Decimal("2.00")) / Decimal(1_000_000)
    assert record.hedge_cost_usd is not None and record.hedge_cost_usd > 0
    assert record.cost_usd == winner_cost + record.hedge_cost_usd
    assert Decimal(response.headers["x-gateway-cost-usd"]) == record.cost_usd

    from usage.models import LatencySample

    samples = {s.deployment: s for s in LatencySample.objects.all()}
    assert samples["slow"].http_status == 499 and not samples["slow"].ok
    assert samples["fast"].ok


def test_fast_first_attempt_is_not_hedged(gateway, upstreams) -> None:
    upstreams["slow"].stall = 0.0
    response = post(gateway)
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == "slow"
    assert "x-gateway-hedged" not in response.headers
    assert len(upstreams["fast"].received) == 0


def test_stream_hedges_before_its_first_byte(gateway, upstreams) -> None:
    response = post(gateway, stream=True)
    assert response.status_code == 200
    body = b"".join(response.iter_content(None))
    assert body.endswith(b"data: [DONE]\n\n")
    assert response.headers["x-gateway-deployment"] == "fast"
    assert response.headers["x-gateway-hedged"] == "slow"
    assert upstreams["slow"].hung_up.wait(2.0)
    drain(claim_idle_ms=0)
    record = UsageRecord.objects.get()
    assert record.hedged and record.stream and record.status == "ok"


def test_the_budget_caps_extra_upstream_requests(gateway, upstreams) -> None:
    from routing.models import RoutingSettings

    RoutingSettings.objects.filter(pk=1).update(hedge_budget_percent=10.0)
    from gatewaysite.config.changes import config_changed

    config_changed()
    upstreams["slow"].stall = 0.4
    statuses = [post(gateway).status_code for _ in range(20)]
    assert statuses == [200] * 20
    primary, extra = len(upstreams["slow"].received), len(upstreams["fast"].received)
    assert primary == 20
    # 20 requests earn 2 tokens: at most 2 hedges, and the burst allowance does not exceed that here
    assert 1 <= extra <= 2


def test_explain_shows_the_hedge_plan(gateway) -> None:
    response = requests.post(
        gateway["url"] + "/v1/routing/explain",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {gateway['secret']}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    hedge = response.json()["hedge"]
    assert hedge == {
        "enabled": True,
        "delay_ms": 150.0,
        "delay_source": "gateway",
        "backup": "fast",
        "budget_percent": 100.0,
    }
