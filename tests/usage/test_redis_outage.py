"""Redis really stopped under the recorder: nothing is lost, the spend counters are never left
short, and the spool goes back into Redis on its own (the recorder, and the periodic task)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from gatewaysite.clock import now
from gatewaysite.redis_client import reset_redis
from providers.pricing.cost import to_picodollars
from tests.procs import LiveGateway, PrivateRedis, current_database_url, gateway_env, wait_until
from usage import recorder as recorder_module
from usage.consumer import drain
from usage.events import CounterIncrement, PendingEvent
from usage.models import UsageRecord
from usage.recorder import GroupCommitWriter, RedisStreamRecorder, reset_recorder
from usage.spool import spool_dir, spool_replay

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def private_redis(tmp_path: Path, settings: Any) -> Iterator[PrivateRedis]:
    """A Redis of this test's own, and this process pointed at it (and at a spool of its own)."""
    server = PrivateRedis(tmp_path / "redis").start()
    settings.REDIS_URL = server.url
    settings.VAR_DIR = tmp_path / "var"
    reset_redis()
    try:
        yield server
    finally:
        server.kill()
        reset_redis()


def _event(request_id: str, cost_pico: int) -> PendingEvent:
    record = {
        "request_id": request_id,
        "created_at": now(),
        "client_key_id": None,
        "model": "gpt-4o-mini",
        "status": "ok",
        "cost_usd": str(Decimal(cost_pico) / 10**12),
    }
    counters = [
        CounterIncrement("{gw}:spend:key:7", cost_pico),
        CounterIncrement("{gw}:budget:key:7:2026-11", cost_pico, 3600),
        CounterIncrement("{gw}:budget:key:7:2026-11:hold:1", -1000, 1800),
    ]
    return PendingEvent(record=record, samples=[], counters=counters)


def test_the_recorder_spools_while_redis_is_stopped_and_replays_exactly_once(private_redis: PrivateRedis) -> None:
    recorder = RedisStreamRecorder()
    assert recorder.record(_event("req_1", 100)) == [100, 100, -1000]
    private_redis.stop()
    assert recorder.record(_event("req_2", 20)) == []  # unknown for now: never reported as zero
    assert recorder.record(_event("req_3", 3)) == []
    spooled = b"".join(path.read_bytes() for path in spool_dir().glob("usage-*"))
    lines = sorted((orjson.loads(line) for line in spooled.splitlines()), key=lambda line: line["batch"][1])
    assert [line["counters"][0] for line in lines] == [["{gw}:spend:key:7", 20, 0], ["{gw}:spend:key:7", 3, 0]]
    assert lines[0]["batch"][1] + 1 == lines[1]["batch"][1]  # two batches, in order

    private_redis.start()
    # the next write replays what this process spooled: the counters get what they missed
    assert recorder.record(_event("req_4", 4000))[0] == 4123
    client = private_redis.client()
    assert int(client.get("{gw}:spend:key:7")) == 4123
    assert int(client.get("{gw}:budget:key:7:2026-11")) == 4123
    assert int(client.get("{gw}:budget:key:7:2026-11:hold:1")) == -4000
    assert client.ttl("{gw}:budget:key:7:2026-11") > 0
    assert not list(spool_dir().iterdir())
    assert drain() == 4
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["req_1", "req_2", "req_3", "req_4"]

    # a replay that is interrupted and runs again (the same lines twice) changes nothing
    spool_dir().joinpath("usage-1.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    assert spool_replay() == 2
    assert int(client.get("{gw}:spend:key:7")) == 4123
    assert drain() == 0


def test_a_quiet_recorder_replays_its_spool_within_seconds_of_redis_coming_back(private_redis: PrivateRedis) -> None:
    """No later request and no periodic task: the writer's idle turn sends the spool back."""
    recorder = RedisStreamRecorder()
    assert recorder.record(_event("req_a", 100)) == [100, 100, -1000]
    private_redis.stop()
    assert recorder.record(_event("req_b", 20)) == []
    assert list(spool_dir().glob("usage-*"))
    private_redis.start()
    client = private_redis.client()
    wait_until(lambda: client.get("{gw}:spend:key:7") == b"120", 10, "the idle replay of the spool")
    assert not list(spool_dir().glob("usage-*"))
    assert drain() == 2
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["req_a", "req_b"]


def test_a_replaced_recorder_replays_nothing_into_the_next_redis(private_redis: PrivateRedis, tmp_path: Path) -> None:
    """``reset_recorder`` (settings changed under the process: another Redis, another spool
    directory) retires the recorder it forgets: a spool it left is not sent, a second later,
    into the Redis that is configured by then."""
    old = RedisStreamRecorder()
    assert old.record(_event("req_old_1", 100)) == [100, 100, -1000]
    private_redis.stop()
    assert old.record(_event("req_old_2", 20)) == []  # spooled
    recorder_module._recorder = old
    reset_recorder()
    private_redis.start()  # back: an active recorder would replay its spool within a second or so
    time.sleep(3 * GroupCommitWriter.IDLE_SECONDS)
    client = private_redis.client()
    assert int(client.get("{gw}:spend:key:7")) == 100  # req_old_2 was not replayed
    assert list(spool_dir().glob("usage-*"))  # still spooled, for the replay of every file
    assert spool_replay() == 1  # which sends it exactly once
    assert int(client.get("{gw}:spend:key:7")) == 120


def test_the_writer_connection_is_renewed_after_a_kill_and_the_script_reloaded_after_a_flush(
    private_redis: PrivateRedis,
) -> None:
    """The writer keeps one connection for its batches: a connection Redis closed is retried once
    on a new one (nothing spooled), and a script cache emptied by SCRIPT FLUSH is filled again."""
    recorder = RedisStreamRecorder()
    assert recorder.record(_event("req_x", 100)) == [100, 100, -1000]
    client = private_redis.client()
    client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert recorder.record(_event("req_y", 20)) == [120, 120, -2000]
    client.script_flush()
    assert recorder.record(_event("req_z", 3)) == [123, 123, -3000]
    assert not list(spool_dir().glob("usage-*"))
    assert int(client.get("{gw}:spend:key:7")) == 123
    assert drain() == 3
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["req_x", "req_y", "req_z"]


def test_the_embedded_default_replays_the_spool_into_the_database(tmp_path: Path, settings: Any) -> None:
    from usage.spool import spool_write

    settings.REDIS_URL = ""
    settings.VAR_DIR = tmp_path / "var"
    reset_redis()
    try:
        spool_write([_event("req_e1", 5), _event("req_e2", 6)], with_counters=False)
        assert spool_replay() == 2
        assert spool_replay() == 0
    finally:
        reset_redis()
    assert UsageRecord.objects.count() == 2


def test_the_embedded_recorder_replays_a_spool_left_by_an_earlier_process(tmp_path: Path, settings: Any) -> None:
    from usage.recorder import DatabaseRecorder
    from usage.spool import spool_write

    settings.REDIS_URL = ""
    settings.VAR_DIR = tmp_path / "var"
    reset_redis()
    try:
        spool_write([_event("req_left", 5)], with_counters=False)
        spool_dir().joinpath(f"usage-{os.getpid()}.jsonl").rename(spool_dir() / "usage-1.jsonl")  # a dead process's
        assert len(DatabaseRecorder().record(_event("req_new", 6))) == 3  # in-process counters
    finally:
        reset_redis()
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["req_left", "req_new"]
    assert not list(spool_dir().iterdir())


def test_the_spool_replay_is_scheduled() -> None:
    from gatewaysite.celery import app
    from usage.tasks import replay_spool

    (entry,) = [e for e in app.conf.beat_schedule.values() if e["task"] == "usage.replay_spool"]
    assert entry["schedule"] <= 30 and entry["options"]["queue"] == replay_spool.queue == "usage"


def test_redis_stopped_under_load_behind_live_gunicorn(
    private_redis: PrivateRedis,
    tmp_path: Path,
    make_openai_route: Any,
) -> None:
    route = make_openai_route("gpt-4o-mini", "0.15", "0.60")
    key, secret = route["key"], route["secret"]
    var = tmp_path / "var"
    env = gateway_env(database_url=current_database_url(), redis_url=private_redis.url, var_dir=var)
    gateway = LiveGateway(env, tmp_path / "gunicorn.log").wait_healthy()
    try:
        client = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0, timeout=30)
        results: list[tuple[str, Decimal, str | None]] = []
        lock = threading.Lock()

        def one(_: int) -> None:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
            raw.parse()
            with lock:
                results.append(
                    (
                        raw.headers["x-request-id"],
                        Decimal(raw.headers["x-gateway-cost-usd"]),
                        raw.headers.get("x-gateway-key-spend-usd"),
                    )
                )

        total = 150
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, i) for i in range(total)]
            wait_until(lambda: len(results) >= 40, 60, "40 answers")
            private_redis.stop()  # mid-load
            wait_until(lambda: len(results) >= 90, 60, "answers with Redis stopped")
            private_redis.start()
            for future in futures:
                future.result(timeout=60)  # every request answered 200
        for _ in range(10):  # Redis is back: each worker replays its own spool after its next write
            one(0)

        spooled = [r for r in results if r[2] is None]
        assert spooled, "some answers must have been recorded while Redis was stopped"
        assert all(r[2] is None or Decimal(r[2]) > 0 for r in results)  # spend unknown, never zero
        spool_replay()  # what the periodic task does: anything a worker has not replayed yet
        assert not list((var / "spool").glob("usage-*"))
        while drain(claim_idle_ms=0):
            pass
    finally:
        gateway.stop()

    ids = [r[0] for r in results]
    assert len(set(ids)) == len(ids) == total + 10
    records = UsageRecord.objects.filter(request_id__in=ids)
    assert records.count() == len(ids) == UsageRecord.objects.count()
    assert sum(r.cost_usd for r in records) == sum(r[1] for r in results)
    spend = int(private_redis.client().get(f"{{gw}}:spend:key:{key.id}"))
    assert spend == to_picodollars(sum(r[1] for r in results))  # the counter missed nothing
