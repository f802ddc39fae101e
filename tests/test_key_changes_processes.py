"""Key changes reach every server process: a key issued after start, and keys revoked or
expired by a raw SQL UPDATE that Django never sees.

Real gunicorn (the production config, two gevent workers) serves the test database. The
test process is "another writer": it issues keys through the service and changes them
with plain SQL. The 5-second deadline is the correctness bound (each process polls the
configuration version every 0.5 s; database triggers bump it on raw writes), not a
speed measurement.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from django.db import connection

from accounts.services import key_issue
from tests.procs import LiveGateway
from tests.test_revocation_processes import _call, gunicorn  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE_SECONDS = 5.0


def _client(url: str, secret: str) -> openai.OpenAI:
    # A new connection per request, so the kernel spreads requests over both workers.
    return openai.OpenAI(
        api_key=secret, base_url=url + "/v1", max_retries=0, timeout=10.0, default_headers={"Connection": "close"}
    )


def _status_for(outcome: str) -> int:
    return 200 if outcome == "ok" else 401


def until_every_worker(server: LiveGateway, client: openai.OpenAI, outcome: str, allowed: set[str]) -> None:
    """Within the deadline every request gets ``outcome``, and then both workers are seen giving it."""
    mark = len(server.served())
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        results = [_call(client) for _ in range(20)]
        assert set(results) <= allowed | {outcome}, results
        if all(r == outcome for r in results):
            break
        assert time.monotonic() < deadline, f"not every request got {outcome} within {DEADLINE_SECONDS} s: {results}"
    # Bursts of concurrent connections: one after another, a busy machine can hand every
    # connection to the same worker (the one whose accept wakes first).
    with ThreadPoolExecutor(8) as pool:
        for _ in range(40):
            answered = {pid for pid, status in server.served()[mark:] if status == _status_for(outcome)}
            if len(answered) == 2:
                return
            assert list(pool.map(lambda _: _call(client), range(8))) == [outcome] * 8
    pytest.fail(f"only one worker answered: {server.served()[-10:]}")


def _raw_update(sql: str, key_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, [key_id])


def test_key_changes_reach_every_worker(gunicorn: LiveGateway) -> None:  # noqa: F811
    # Issued after start (by another process): works on both workers within the bound.
    key, secret = key_issue(name="late")
    client = _client(gunicorn.url, secret)
    until_every_worker(gunicorn, client, "ok", allowed={"invalid_api_key"})

    # Revoked by a writer Django does not see.
    _raw_update("UPDATE accounts_clientkey SET revoked = true, revoked_at = now() WHERE id = %s", key.id)
    until_every_worker(gunicorn, client, "key_revoked", allowed={"ok"})

    # Expired by a writer Django does not see.
    other, other_secret = key_issue(name="to-expire")
    other_client = _client(gunicorn.url, other_secret)
    until_every_worker(gunicorn, other_client, "ok", allowed={"invalid_api_key"})
    _raw_update("UPDATE accounts_clientkey SET expires_at = now() - interval '1 minute' WHERE id = %s", other.id)
    until_every_worker(gunicorn, other_client, "key_expired", allowed={"ok"})
