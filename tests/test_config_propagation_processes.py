"""Configuration changes take effect at a known instant in every server process.

Real gunicorn (the production config, two gevent workers) serves the test database and
Redis. Two things are checked:

- read-your-writes: once ``POST /admin/routing/strategy`` answered, the very next
  requests, whichever worker serves them, all use the new strategy. The poll interval is
  set to 2 s here, so a worker that only learnt of the switch by polling would route
  by the old strategy for up to 2 s;
- money through a price change: under concurrent load on both workers, a price list is
  imported ("now"); every usage record's cost equals the cost computed by hand from the
  provider's token counts and the pricing row in effect when the request was received,
  and the response's cost header says the same.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import call_command

from tests.fakes.anthropic_server import FakeAnthropic, message_json
from tests.fakes.http_server import Received, Reply
from tests.fakes.openai_server import FakeOpenAI, completion_json
from tests.procs import LiveGateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

MILLION = Decimal(1_000_000)


def _start(tmp_path: Path, **env: str) -> Iterator[LiveGateway]:
    server = start_gateway(tmp_path, clean=True, **env)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _warm_both_workers(server: LiveGateway, send: Any) -> None:
    """Until each worker served a few requests (so each runs its config poller)."""
    for _ in range(60):
        for _ in range(10):
            send()
        pids: dict[int, int] = {}
        for pid, _status in server.served():
            pids[pid] = pids.get(pid, 0) + 1
        if len(pids) == 2 and min(pids.values()) >= 3:
            return
    pytest.fail(f"the requests did not reach both workers: {server.served()[-10:]}")


# --- read-your-writes: a strategy switch ---------------------------------------------------


@pytest.fixture
def mock_gateway(
    tmp_path: Path, make_provider: Any, make_deployment: Any, issue_key: Any, redis_client: Any
) -> Iterator[dict[str, Any]]:
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.contrib.auth.models import User

    provider = make_provider("mock", kind="mock", vendor="mock", api_key="", options={"reply": "hi"})
    for name in ("mock-a", "mock-b"):
        make_deployment(provider, "mock-gpt", name=name)
    _, secret = issue_key()
    User.objects.create(  # the server verifies with the production hashers
        username="ops",
        is_staff=True,
        is_superuser=True,  # the strategy switch needs routing.change_routingsettings
        password=PBKDF2PasswordHasher().encode("ops-password-1", "fixedsalt1234", iterations=1000),
    )
    # Polling every 2 s: only the announcement and the acknowledged wait make the switch immediate.
    for server in _start(tmp_path, GATEWAY_CONFIG_POLL_SECONDS="2"):
        yield {"server": server, "secret": secret}


def test_after_a_strategy_switch_the_very_next_requests_all_use_it(mock_gateway: dict[str, Any]) -> None:
    server: LiveGateway = mock_gateway["server"]
    headers = {"Authorization": f"Bearer {mock_gateway['secret']}", "Connection": "close"}
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "Hi"}]}

    def send() -> requests.Response:
        response = requests.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return response

    _warm_both_workers(server, send)
    assert send().headers["x-gateway-strategy"] == "model"
    token = requests.post(
        server.url + "/api/token/", json={"username": "ops", "password": "ops-password-1"}, timeout=10
    ).json()["access"]

    for strategy in ("balanced", "model", "balanced"):  # three switches: no luck involved
        before = len(server.served())
        switched = requests.post(
            server.url + "/admin/routing/strategy",
            json={"strategy": strategy},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert switched.status_code == 200, switched.text
        propagation = switched.json()["propagation"]
        assert propagation["complete"] is True and propagation["processes"] == 2, propagation
        assert switched.headers["x-gateway-config-propagation"] == "complete"
        # The very next 40 requests, 8 at a time over new connections (both workers take some).
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: send(), range(40)))
        assert [r.headers["x-gateway-strategy"] for r in answers] == [strategy] * 40
        workers = {pid for pid, _ in server.served()[before:]}
        assert len(workers) == 2, f"only {workers} served the 40 requests after the switch"


def test_a_write_says_when_a_process_has_not_acknowledged(mock_gateway: dict[str, Any]) -> None:
    """A live process that stops acknowledging (here: stopped with SIGSTOP) is named, not waited for forever."""
    import signal

    from gatewaysite.config.propagation import wait_for_propagation
    from routing.services.settings import routing_strategy_set

    server: LiveGateway = mock_gateway["server"]
    headers = {"Authorization": f"Bearer {mock_gateway['secret']}", "Connection": "close"}
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "Hi"}]}
    _warm_both_workers(
        server, lambda: requests.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
    )
    stopped = server.served()[-1][0]
    os.kill(stopped, signal.SIGSTOP)
    try:
        routing_strategy_set(strategy="balanced")
        result = wait_for_propagation(timeout=1.0)
        assert result is not None and not result.complete
        assert result.processes == 2 and len(result.lagging) == 1 and f":{stopped}:" in result.lagging[0]
        assert "1 of 2 gateway processes had not acknowledged" in result.message()
    finally:
        os.kill(stopped, signal.SIGCONT)
    routing_strategy_set(strategy="model")
    resumed = wait_for_propagation()
    assert resumed is not None and resumed.complete, resumed


# --- money through a price change ------------------------------------------------------------

# Old prices (in effect since 2024) and new ones, imported "now" while requests flow. Odd six-decimal prices.
OLD = {
    "openai": {"input": "0.151234", "output": "0.604321", "cached": "0.075617"},
    "anthropic": {
        "input": "3.000007",
        "output": "15.000013",
        "cached": "0.300001",
        "write": "3.750009",
        "write_1h": "6.000011",
    },
}
NEW_CSV = (
    "vendor,model,input_per_mtok,output_per_mtok,cached_input_per_mtok,cache_write_per_mtok,cache_write_1h_per_mtok\n"
    "openai,gpt-4o-mini,0.133337,0.577771,0.066661,,\n"
    "anthropic,claude-x,2.900003,14.500007,0.290009,3.625001,5.800003\n"
)
NEW = {
    "openai": {"input": "0.133337", "output": "0.577771", "cached": "0.066661"},
    "anthropic": {
        "input": "2.900003",
        "output": "14.500007",
        "cached": "0.290009",
        "write": "3.625001",
        "write_1h": "5.800003",
    },
}


def _tokens(n: int) -> dict[str, int]:
    """What the fake upstreams report for the request numbered ``n`` (varied, so mistakes show)."""
    return {
        "fresh": 900 + n % 97,
        "cached": 100 + n % 13 * 7,
        "write_5m": 30 + n % 11,
        "write_1h": 20 + n % 5 * 3,
        "output": 40 + n % 29,
    }


def _number(received: Received) -> int:
    content = received.body["messages"][-1]["content"]
    text = content if isinstance(content, str) else content[-1]["text"]  # Anthropic: a list of blocks
    return int(text.split()[-1])


class LedgerOpenAI(FakeOpenAI):
    def default_reply(self, received: Received) -> Reply:
        t = _tokens(_number(received))
        prompt = t["fresh"] + t["cached"]
        return Reply(
            json=completion_json(prompt_tokens=prompt, completion_tokens=t["output"], cached_tokens=t["cached"])
        )


class LedgerAnthropic(FakeAnthropic):
    def default_reply(self, received: Received) -> Reply:
        rejection = self.rejection(received)
        if rejection is not None:
            return rejection
        t = _tokens(_number(received))
        data = message_json(
            model=received.body["model"],
            input_tokens=t["fresh"],
            output_tokens=t["output"],
            cache_read=t["cached"],
            cache_write=t["write_5m"] + t["write_1h"],
        )
        data["usage"]["cache_creation"] = {
            "ephemeral_5m_input_tokens": t["write_5m"],
            "ephemeral_1h_input_tokens": t["write_1h"],
        }
        return Reply(json=data)


def _hand_cost(vendor: str, n: int, prices: dict[str, str]) -> Decimal:
    t = _tokens(n)
    p = {k: Decimal(v) for k, v in prices.items()}
    if vendor == "openai":
        total = t["fresh"] * p["input"] + t["cached"] * p["cached"] + t["output"] * p["output"]
    else:
        total = (
            t["fresh"] * p["input"]
            + t["cached"] * p["cached"]
            + t["write_5m"] * p["write"]
            + t["write_1h"] * p["write_1h"]
            + t["output"] * p["output"]
        )
    return total / MILLION


@pytest.fixture
def ledger_gateway(
    tmp_path: Path, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> Iterator[dict[str, Any]]:
    openai_up = LedgerOpenAI().start()
    anthropic_up = LedgerAnthropic().start()
    try:
        oa = make_provider("oa", base_url=openai_up.url + "/v1", vendor="openai")
        make_deployment(oa, "gpt-4o-mini")
        an = make_provider("an", kind="anthropic", base_url=anthropic_up.url, vendor="anthropic", api_key="sk-ant-test")
        make_deployment(an, "claude-x")
        o, a = OLD["openai"], OLD["anthropic"]
        make_price("openai", "gpt-4o-mini", o["input"], o["output"], cached_input_per_mtok=Decimal(o["cached"]))
        make_price(
            "anthropic",
            "claude-x",
            a["input"],
            a["output"],
            cached_input_per_mtok=Decimal(a["cached"]),
            cache_write_per_mtok=Decimal(a["write"]),
            cache_write_1h_per_mtok=Decimal(a["write_1h"]),
        )
        _, secret = issue_key()
        for server in _start(tmp_path):  # the default 0.5 s poll
            yield {"server": server, "secret": secret}
    finally:
        openai_up.stop()
        anthropic_up.stop()


def test_every_record_is_billed_by_the_row_in_effect_at_its_receipt_through_a_price_change(
    ledger_gateway: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    from providers.models import PricingRow
    from usage.consumer import drain
    from usage.models import UsageRecord

    server: LiveGateway = ledger_gateway["server"]
    headers = {"Authorization": f"Bearer {ledger_gateway['secret']}", "Connection": "close"}
    sent: dict[str, tuple[str, int, str]] = {}  # request id -> (vendor, number, cost header)
    lock = threading.Lock()
    counter = iter(range(1_000_000))
    stop = threading.Event()

    def one() -> None:
        with lock:
            n = next(counter)
        vendor, model = ("openai", "gpt-4o-mini") if n % 2 else ("anthropic", "claude-x")
        body = {"model": model, "messages": [{"role": "user", "content": f"ledger {n}"}], "max_tokens": 50}
        response = requests.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        with lock:
            sent[response.headers["x-request-id"]] = (vendor, n, response.headers["x-gateway-cost-usd"])

    _warm_both_workers(server, one)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            while not stop.is_set():
                one()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        price_file = tmp_path / "new-prices.csv"
        price_file.write_text(NEW_CSV)
        call_command("pricing", "import", str(price_file))  # "now": no effective_from
        out = capsys.readouterr().out
        assert "2 created" in out and "served by all 2 gateway processes" in out, out
        new_from = (
            PricingRow.objects.filter(vendor="openai", model="gpt-4o-mini").latest("effective_from").effective_from
        )
        # keep the load on until well past the moment the new prices take effect
        while time.time() < new_from.timestamp() + 1.5 and not stop.is_set():
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors, errors

    deadline = time.monotonic() + 30
    while UsageRecord.objects.count() < len(sent):
        drain(claim_idle_ms=1000)
        assert time.monotonic() < deadline, f"{UsageRecord.objects.count()} of {len(sent)} records arrived"
    records = {r.request_id: r for r in UsageRecord.objects.all()}
    assert set(records) == set(sent)

    rows = {
        vendor: list(PricingRow.objects.filter(vendor=vendor).order_by("effective_from"))
        for vendor in ("openai", "anthropic")
    }
    assert all(len(r) == 2 for r in rows.values())
    mismatches = []
    billed_by = {"old": 0, "new": 0}
    for request_id, (vendor, n, header) in sent.items():
        record = records[request_id]
        old_row, new_row = rows[vendor]
        in_effect = new_row if new_row.effective_from <= record.created_at else old_row
        billed_by["new" if in_effect is new_row else "old"] += 1
        expected = _hand_cost(vendor, n, (NEW if in_effect is new_row else OLD)[vendor])
        if (record.cost_usd, record.pricing_row_id, Decimal(header)) != (expected, in_effect.id, expected):
            mismatches.append((request_id, record.created_at, record.cost_usd, record.pricing_row_id, header, expected))
    assert not mismatches, f"{len(mismatches)} of {len(sent)} mismatched, e.g. {mismatches[:3]}"
    # the change happened under load: plenty of requests on each side of it, on both workers
    assert billed_by["old"] >= 20 and billed_by["new"] >= 20, billed_by
    assert len({pid for pid, _ in server.served()}) == 2
    # Anthropic's one-hour writes were recorded apart
    claude = next(r for r in records.values() if r.provider == "an")
    n = sent[claude.request_id][1]
    assert (claude.cache_creation_tokens, claude.cache_creation_1h_tokens) == (
        _tokens(n)["write_5m"] + _tokens(n)["write_1h"],
        _tokens(n)["write_1h"],
    )
