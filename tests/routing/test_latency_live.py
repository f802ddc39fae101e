"""Live latency (shared through Redis, in process without it) and the latency strategy.

The end-to-end test sends requests through a live gateway to two loopback OpenAI-compatible
upstreams, makes one slow, and watches traffic move away from it and come back.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gatewaysite.clock import Clock
from providers.adapters.base import Target
from routing.config.snapshot import DeploymentInfo
from routing.strategies.latency import LatencyStrategy
from tests.fakes.http_server import Received, Reply
from tests.fakes.openai_server import FakeOpenAI
from usage.latency.live import FULL_READ_EVERY, RECENT_SECONDS, LiveLatency


class MovableClock(Clock):
    """Real time plus an offset that tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=self.offset)

    def time(self) -> float:
        return super().time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> MovableClock:
    fake = MovableClock()
    monkeypatch.setattr("gatewaysite.clock.clock", fake)
    return fake


@pytest.fixture
def conf(settings: Any) -> dict[str, Any]:
    settings.GATEWAY = {
        **settings.GATEWAY,
        "LATENCY_WINDOW_SECONDS": 60,
        "LATENCY_HALF_LIFE_SECONDS": 10.0,
        "LATENCY_ERROR_PENALTY_MS": 5000.0,
        "LATENCY_MIN_SAMPLES": 3,
        "LATENCY_EXPLORE_EVERY": 5,
    }
    return settings.GATEWAY


def embedded() -> LiveLatency:
    return LiveLatency(client_factory=lambda: None, background=False)


def test_decayed_mean_and_window(clock: MovableClock, conf: dict[str, Any]) -> None:
    live = embedded()
    live.observe("a", 100.0, True)
    live.observe("b", 10.0, True)
    assert live.stats() == {"a": (100.0, 1), "b": (10.0, 1)}
    clock.advance(10)  # one half-life: the old sample weighs 0.5
    live.observe("a", 400.0, True)
    mean, samples = live.stats()["a"]
    assert samples == 2
    assert mean == pytest.approx((100 * 0.5 + 400) / 1.5)
    clock.advance(51)  # the first samples leave the 60 s window
    assert live.stats() == {"a": (400.0, 1)}
    clock.advance(60)
    assert live.stats() == {}


def test_quantiles_read_the_newest_samples_and_the_ones_a_second_before_them(
    clock: MovableClock, conf: dict[str, Any]
) -> None:
    live = embedded()
    for ms, seconds_after in ((100, 1), (150, 1), (400, 0)):
        for _ in range(20):
            live.observe("a", ms, True)
        clock.advance(seconds_after)
    figure = live.quantiles(0.95, stream=False, recent=20)["a"]
    assert figure.ms == pytest.approx(400, rel=0.05) and figure.samples == 20 and figure.window_samples == 60
    # the second just before the newest read is left out: a stall may straddle two seconds
    assert figure.previous_ms == pytest.approx(100, rel=0.05) and figure.previous_samples == 20
    only_new = embedded()
    for _ in range(20):
        only_new.observe("b", 400, True)
    figure = only_new.quantiles(0.95, stream=False, recent=20)["b"]
    assert figure.previous_ms is None and figure.previous_samples == 0


def test_quantiles_are_reused_briefly_within_a_second(clock: MovableClock, conf: dict[str, Any], settings: Any) -> None:
    """Routing asks on every request: one fold of the window serves the next 0.25 s of that second."""
    settings.GATEWAY = {**settings.GATEWAY, "LATENCY_QUANTILE_CACHE_SECONDS": 30.0}
    live = embedded()
    for _ in range(20):
        live.observe("a", 100, True)
    first = live.quantiles(0.95, stream=False, recent=20)
    live.observe("a", 900, True)
    assert live.quantiles(0.95, stream=False, recent=20) is first  # reused
    clock.advance(1)  # a new second reads the samples again
    assert live.quantiles(0.95, stream=False, recent=20)["a"].window_samples == 21
    settings.GATEWAY = {**settings.GATEWAY, "LATENCY_QUANTILE_CACHE_SECONDS": 0.0}
    live.observe("a", 900, True)
    assert live.quantiles(0.95, stream=False, recent=20)["a"].window_samples == 22  # off: always fresh


def test_errors_count_as_slow(clock: MovableClock, conf: dict[str, Any]) -> None:
    live = embedded()
    live.observe("a", 20.0, True)
    live.observe("a", 3.0, False)  # a fast failure is not a fast answer
    stat = live.live()["a"]
    assert (stat.samples, stat.errors) == (2, 1)
    assert stat.mean_ms == pytest.approx((20 + 5000) / 2)


def test_processes_share_through_redis_without_double_counting(
    clock: MovableClock, conf: dict[str, Any], redis_client: Any
) -> None:
    first = LiveLatency(background=False)
    second = LiveLatency(background=False)
    first.observe("a", 100.0, True)
    assert first.stats()["a"] == (100.0, 1)  # visible here before any sync
    assert second.stats() == {}
    second.observe("a", 300.0, True)
    second.observe("a", 1.0, False)
    first.sync_now()
    second.sync_now()
    first.sync_now()
    expected = pytest.approx((100 + 300 + 5000) / 3)
    for _ in range(3):  # syncing again changes nothing
        for live in (first, second):
            live.sync_now()
            mean, samples = live.stats()["a"]
            assert (mean, samples) == (expected, 3)
    # what moved through Redis: per-second hashes that expire
    keys = redis_client.keys("gw:lat:*")
    assert keys and all(0 < redis_client.ttl(k) <= 70 for k in keys)
    clock.advance(61)
    first.sync_now()
    assert first.stats() == {}


def test_redis_outage_keeps_local_observations(clock: MovableClock, conf: dict[str, Any], redis_client: Any) -> None:
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    client: list[Any] = [down]
    live = LiveLatency(client_factory=lambda: client[0], background=False)
    live.observe("a", 50.0, True)
    with pytest.raises(redis.ConnectionError):
        live.sync_now()
    assert live.stats()["a"] == (50.0, 1)
    client[0] = redis_client
    live.sync_now()
    other = LiveLatency(background=False)
    other.sync_now()
    assert other.stats()["a"] == (50.0, 1)
    assert live.stats()["a"] == (50.0, 1)


class CountingClient:
    """The real Redis client; counts the HGETALLs its pipelines send."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.hgetalls = 0

    def pipeline(self, **kwargs: Any) -> Any:
        pipe = self.client.pipeline(**kwargs)
        hgetall = pipe.hgetall

        def counted(name: str) -> Any:
            self.hgetalls += 1
            return hgetall(name)

        pipe.hgetall = counted
        return pipe


def test_sync_reads_the_whole_window_only_every_few_seconds(
    clock: MovableClock, conf: dict[str, Any], redis_client: Any
) -> None:
    """An idle process re-reads the recent seconds each sync, not the whole window (docs/scaling.md)."""
    client = CountingClient(redis_client)
    reader = LiveLatency(client_factory=lambda: client, background=False)
    writer = LiveLatency(background=False)
    writer.observe("a", 100.0, True)
    writer.sync_now()
    reader.sync_now()  # the first sync reads the whole window
    assert client.hgetalls == conf["LATENCY_WINDOW_SECONDS"]
    assert reader.stats()["a"] == (100.0, 1)

    clock.advance(20)  # that second is now older than the recent ones: kept as read, not read again
    client.hgetalls = 0
    reader.sync_now()
    assert client.hgetalls == RECENT_SECONDS
    assert reader.stats()["a"] == pytest.approx((100.0, 1))

    # a process whose sync stalled pushes a second that is no longer recent: seen at the next whole read
    late = LiveLatency(background=False)
    late.sync_now()
    late.observe("a", 300.0, True)
    clock.advance(20)
    late.sync_now()
    assert late.stats()["a"][1] == 2  # its own late push is read back at once, with the recent seconds
    syncs = 1
    while reader.stats()["a"][1] == 1:
        reader.sync_now()
        syncs += 1
        assert syncs <= FULL_READ_EVERY
    assert reader.stats()["a"][1] == 2

    clock.advance(conf["LATENCY_WINDOW_SECONDS"])  # seconds kept from earlier reads leave with the window
    reader.sync_now()
    assert reader.stats() == {}


def test_failed_sync_reads_the_whole_window_next(clock: MovableClock, conf: dict[str, Any], redis_client: Any) -> None:
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    client: list[Any] = [CountingClient(redis_client)]
    live = LiveLatency(client_factory=lambda: client[0], background=False)
    live.sync_now()
    live.sync_now()
    client[0] = down
    with pytest.raises(redis.ConnectionError):
        live.sync_now()
    counting = client[0] = CountingClient(redis_client)
    live.sync_now()
    assert counting.hgetalls == conf["LATENCY_WINDOW_SECONDS"]


def deployment(name: str, priority: int = 0) -> DeploymentInfo:
    target = Target(provider=name, kind="openai", base_url="http://127.0.0.1:1", model="m", api_key="k")
    return DeploymentInfo(
        id=priority,
        name=name,
        model_name="m",
        provider_id=priority,
        provider=name,
        kind="openai",
        vendor="openai",
        provider_model="m",
        weight=1,
        priority=priority,
        context_window=None,
        target=target,
    )


REQUEST: Any = SimpleNamespace(dry_run=False)
DRY_RUN: Any = SimpleNamespace(dry_run=True)


def test_strategy_orders_by_recent_latency_and_explores(
    clock: MovableClock, conf: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    live = embedded()
    monkeypatch.setattr("routing.strategies.latency.live_latency", live)
    strategy = LatencyStrategy()
    a, b, c = deployment("a", 0), deployment("b", 1), deployment("c", 2)
    ranking = strategy.choose(REQUEST, [c, b, a])
    assert [d.name for d in ranking.candidates] == ["a", "b", "c"]
    assert ranking.reason == "no_recent_samples"
    for _ in range(3):
        live.observe("a", 80.0, True)
        live.observe("b", 20.0, True)
    ranking = strategy.choose(REQUEST, [a, b, c])
    assert [d.name for d in ranking.candidates][:2] == ["b", "a"]
    assert ranking.scores["b"] == {"mean_ms": 20.0, "samples": 3}
    assert ranking.scores["c"] == {"mean_ms": None, "samples": 0}
    firsts = Counter(strategy.choose(REQUEST, [a, b, c]).candidates[0].name for _ in range(99))
    assert firsts["c"] == 20  # one in five tries the unmeasured deployment first
    assert firsts["b"] == 79
    # explain (dry run) shows the ranking without moving the cadence
    turn = strategy._turn
    assert {strategy.choose(DRY_RUN, [a, b, c]).candidates[0].name for _ in range(10)} <= {"b", "c"}
    assert strategy._turn == turn
    # b starts failing: errors count as slow, a takes over
    for _ in range(3):
        live.observe("b", 5.0, False)
    assert strategy.choose(REQUEST, [a, b]).candidates[0].name == "a"


class TunableOpenAI(FakeOpenAI):
    """A fake provider whose unscripted answers all wait ``delay`` seconds."""

    delay = 0.0

    def default_reply(self, received: Received) -> Reply:
        reply = super().default_reply(received)
        reply.delay = self.delay
        return reply


@pytest.fixture
def two_upstreams() -> Any:
    servers = TunableOpenAI().start(), TunableOpenAI().start()
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_traffic_moves_away_from_a_slow_provider_and_back(
    two_upstreams: tuple[TunableOpenAI, TunableOpenAI],
    clock: MovableClock,
    conf: dict[str, Any],
    redis_client: Any,
    make_provider: Any,
    make_deployment: Any,
    issue_key: Any,
    openai_for: Any,
) -> None:
    from routing.services.settings import routing_strategy_set
    from usage.latency.live import live_latency

    live_latency.reset()
    alpha, beta = two_upstreams
    make_deployment(make_provider("alpha", base_url=alpha.url + "/v1"), "gpt-4o-mini", priority=0)
    make_deployment(make_provider("beta", base_url=beta.url + "/v1"), "gpt-4o-mini", priority=1)
    routing_strategy_set(strategy="latency")
    _, secret = issue_key()
    client = openai_for(secret)

    def send(count: int) -> list[tuple[str, str]]:
        served = []
        for _ in range(count):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
            )
            served.append((raw.headers["x-gateway-provider"], raw.headers["x-gateway-route-reason"]))
        return served

    # 1. alpha (first by priority) is slow, beta fast: exploration finds beta, which takes the traffic
    alpha.delay, beta.delay = 0.04, 0.0
    served = send(35)
    assert served[0] == ("alpha", "no_recent_samples")
    assert ("beta", "explore") in served
    assert [p for p, _ in served[-10:]] == ["beta"] * 10

    # 2. beta slows down: within a few requests alpha (now fast) takes over
    alpha.delay, beta.delay = 0.0, 0.15
    served = send(30)
    assert Counter(p for p, _ in served)["beta"] <= 12
    assert [p for p, _ in served[-15:]] == ["alpha"] * 15
    stats = live_latency.stats()
    assert stats["beta-gpt-4o-mini"][0] > stats["alpha-gpt-4o-mini"][0]

    # 3. beta recovers; once its slow samples have left the window it is tried again and wins traffic back
    beta.delay = 0.0
    clock.advance(conf["LATENCY_WINDOW_SECONDS"] + 1)
    served = send(40)
    back = [reason for provider, reason in served if provider == "beta"]
    assert "explore" in back
    assert len(back) >= 3
    mean, samples = live_latency.stats()["beta-gpt-4o-mini"]
    assert samples >= 3 and mean < 100


def test_forked_child_starts_clean(clock: MovableClock, conf: dict[str, Any]) -> None:
    import os

    live = embedded()
    live.observe("a", 10.0, True)
    pid = os.fork()
    if pid == 0:  # the child: the parent's observations are not this process's
        os._exit(0 if live.stats() == {} and live._thread is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert live.stats() == {"a": (10.0, 1)}
