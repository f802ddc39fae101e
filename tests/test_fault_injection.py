"""Fault injection under load: a gunicorn worker, the consumer and Redis are killed while a
few hundred requests run. Every request that got its answer has exactly one usage record,
and the costs the clients were told add up to the costs recorded, to the pico-dollar.

Everything is the test's own: a Redis with an fsync'd append-only file (SIGKILL loses
nothing it acknowledged), a loopback upstream, a two-worker gunicorn, a consumer process
draining the stream. Faults are real SIGKILLs at fixed points of the load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from gatewaysite.redis_client import reset_redis
from providers.pricing.cost import to_picodollars
from tests.procs import ROOT, LiveGateway, PrivateRedis, current_database_url, gateway_env, wait_until
from usage.consumer import GROUP, drain
from usage.models import UsageRecord
from usage.spool import spool_replay

pytestmark = pytest.mark.django_db(transaction=True)

TOTAL = 300
CONSUMER = """
import time
import django
django.setup()
from usage.consumer import drain
while True:
    try:
        drain(claim_idle_ms=1000)
    except Exception as exc:  # Redis killed: try again, as the Celery task would
        print("drain failed:", type(exc).__name__, flush=True)
    time.sleep(0.1)
"""


class Consumer:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", CONSUMER], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def test_kills_of_a_worker_the_consumer_and_redis_lose_and_duplicate_nothing(
    tmp_path: Path,
    settings: Any,
    make_openai_route: Any,
) -> None:
    route = make_openai_route("gpt-4o-mini", "0.15", "0.60")
    key, secret = route["key"], route["secret"]
    redis = PrivateRedis(tmp_path / "redis").start()
    var = tmp_path / "var"
    env = gateway_env(database_url=current_database_url(), redis_url=redis.url, var_dir=var)
    gateway = LiveGateway(env, tmp_path / "gunicorn.log")
    consumer = Consumer(env, tmp_path / "consumer.log")
    completed: dict[str, Decimal] = {}
    failures: list[str] = []
    lock = threading.Lock()
    try:
        gateway.wait_healthy()
        consumer.start()
        sdk = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0, timeout=30)

        def one(_: int) -> None:
            try:
                raw = sdk.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
                )
                raw.parse()
            except openai.APIStatusError as exc:
                with lock:
                    failures.append(f"HTTP {exc.status_code}: {exc.message[:200]}")
                return
            except openai.APIConnectionError as exc:  # the worker holding the connection was killed
                with lock:
                    failures.append(type(exc).__name__)
                return
            with lock:
                completed[raw.headers["x-request-id"]] = Decimal(raw.headers["x-gateway-cost-usd"])

        def done() -> int:
            return len(completed) + len(failures)

        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(one, i) for i in range(TOTAL)]
            wait_until(lambda: done() >= 60, 60, "60 answers")
            os.kill(gateway.worker_pids()[0], signal.SIGKILL)  # gunicorn starts another one
            wait_until(lambda: done() >= 120, 60, "120 answers")
            consumer.kill()
            consumer.start()
            wait_until(lambda: done() >= 180, 60, "180 answers")
            redis.kill()
            time.sleep(0.5)  # requests meanwhile are spooled
            redis.start()
            for future in futures:
                future.result(timeout=120)
        sdk.close()
        wait_until(lambda: len(gateway.worker_pids()) == 2, 30, "gunicorn to replace the killed worker")
        consumer.kill()

        # What the periodic task does, then what the consumer does, until everything is in.
        settings.REDIS_URL = redis.url
        settings.VAR_DIR = var
        reset_redis()
        spool_replay()
        assert not list((var / "spool").glob("usage-*")) if (var / "spool").exists() else True
        while drain(claim_idle_ms=0):
            pass
        client = redis.client()
        assert client.xlen("{gw}:usage") == 0 and client.xpending("{gw}:usage", GROUP)["pending"] == 0
        spend = int(client.get(f"{{gw}}:spend:key:{key.id}") or 0)
    finally:
        consumer.kill()
        gateway.stop()
        redis.kill()
        reset_redis()

    assert not [f for f in failures if f.startswith("HTTP 5")], failures  # never a 5xx
    assert len(completed) + len(failures) == TOTAL
    assert len(failures) <= 12, failures  # only what the killed worker held
    records = UsageRecord.objects.all()
    ids = list(records.values_list("request_id", flat=True))
    assert len(ids) == len(set(ids)) <= TOTAL  # none duplicated, none invented
    answered = {r.request_id: r.cost_usd for r in records.filter(request_id__in=list(completed))}
    assert set(answered) == set(completed)  # exactly one record per answered request
    assert sum(answered.values()) == sum(completed.values())  # the clients' costs == the recorded costs
    assert spend == to_picodollars(sum(r.cost_usd for r in records))  # the counter missed nothing, twice nothing
