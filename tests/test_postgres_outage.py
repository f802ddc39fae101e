"""Postgres stopped under a live gateway: requests are still served from each process's
configuration and key cache, usage waits in the Redis stream, and once Postgres is back
every request has exactly one record.

The test starts its own Postgres cluster (initdb on a free port, migrated) and its own
Redis, points a two-worker gunicorn at them, and stops and restarts that Postgres.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.procs import LiveGateway, PrivatePostgres, PrivateRedis, gateway_env, manage, python, wait_until

HELLO = [{"role": "user", "content": "Hello"}]
LOG_LINE = re.compile(r"^<(\d+)> (\d{3}) /v1/chat/completions$")

SETUP = """
import os
from datetime import UTC, datetime
from decimal import Decimal
from accounts.services import key_issue
from providers.models import Deployment, PricingRow, Provider
provider = Provider.objects.create(name="up", kind="openai", base_url=os.environ["UPSTREAM"], api_key="sk-up", vendor="openai")
Deployment.objects.create(name="up-gpt", model_name="gpt-4o-mini", provider=provider, provider_model="gpt-4o-mini")
PricingRow.objects.create(vendor="openai", model="gpt-4o-mini", input_per_mtok=Decimal("0.15"),
                          output_per_mtok=Decimal("0.60"), effective_from=datetime(2024, 1, 1, tzinfo=UTC))
print(key_issue(name="outage")[1])
"""

DRAIN = """
from usage.consumer import drain
total = 0
while (count := drain(claim_idle_ms=0)):
    total += count
print(total)
"""

RECORDS = """
import json
from usage.models import UsageDeadLetter, UsageRecord
rows = list(UsageRecord.objects.values_list("request_id", "cost_usd"))
print(json.dumps({"records": [[r, str(c)] for r, c in rows], "dead": UsageDeadLetter.objects.count()}))
"""


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().init()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def outage_gateway(
    private_postgres: PrivatePostgres, tmp_path: Path, fake_openai: FakeOpenAI
) -> Iterator[dict[str, Any]]:
    redis = PrivateRedis(tmp_path / "redis").start()
    env = gateway_env(database_url=private_postgres.url, redis_url=redis.url, var_dir=tmp_path / "var")
    env["UPSTREAM"] = fake_openai.url + "/v1"
    manage(env, "migrate", "--noinput")
    secret = python(env, SETUP).stdout.strip().splitlines()[-1]
    gateway = LiveGateway(env, tmp_path / "gunicorn.log")
    try:
        gateway.wait_healthy()
        yield {"gateway": gateway, "env": env, "secret": secret, "postgres": private_postgres}
    finally:
        gateway.stop()
        redis.kill()
        if not (private_postgres.data / "postmaster.pid").exists():
            private_postgres.start()


def _served_by(gateway: LiveGateway) -> set[int]:
    pids = set()
    for line in gateway.log().splitlines():
        match = LOG_LINE.match(line.strip())
        if match and match.group(2) == "200":
            pids.add(int(match.group(1)))
    return pids


def _call(gateway: LiveGateway, secret: str) -> tuple[str, str]:
    # A new client (connection) per request, so both workers get requests.
    client = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0, timeout=30)
    try:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        raw.parse()
        return raw.headers["x-request-id"], raw.headers["x-gateway-cost-usd"]
    finally:
        client.close()


def test_requests_are_served_and_recorded_exactly_once_across_a_postgres_outage(
    outage_gateway: dict[str, Any],
) -> None:
    gateway, env, secret = outage_gateway["gateway"], outage_gateway["env"], outage_gateway["secret"]
    postgres: PrivatePostgres = outage_gateway["postgres"]
    served: dict[str, str] = {}

    def warm() -> bool:  # every worker has its configuration snapshot and the key cached
        served.update([_call(gateway, secret)])
        return _served_by(gateway) >= set(gateway.worker_pids())

    wait_until(warm, 60, "both workers to serve the key")

    postgres.stop()
    during = dict(_call(gateway, secret) for _ in range(40))  # every one answered 200 (raises otherwise)
    assert len(_served_by(gateway)) == 2
    stuck = python(env, DRAIN, check=False)  # the consumer cannot insert: it fails, nothing is given up
    assert stuck.returncode != 0 and "OperationalError" in stuck.stderr
    postgres.start()

    served.update(during)
    served.update([_call(gateway, secret) for _ in range(5)])
    python(env, DRAIN)
    result = json.loads(python(env, RECORDS).stdout.strip().splitlines()[-1])
    records = dict(result["records"])
    assert len(result["records"]) == len(records)  # unique
    assert set(records) == set(served)  # one record per request, none lost
    assert all(records[rid] and float(records[rid]) == float(cost) for rid, cost in served.items())
    assert result["dead"] == 0
