"""A revoked key stops working on every server process, not only the one that revoked it.

Real gunicorn (the production config, two gevent workers) serves the test database; both
workers are warmed so each has the key in its in-process cache; the test process revokes
the key and then polls until every request is refused. The 5-second deadline is the
correctness bound (each process polls the configuration version every 0.5 s), not a
speed measurement.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest

from accounts.services import key_issue, key_revoke
from tests.procs import LiveGateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Hello"}]
DEADLINE_SECONDS = 5.0


@pytest.fixture
def gunicorn(tmp_path: Path, make_provider: Any, make_deployment: Any, redis_client: Any) -> Any:
    provider = make_provider("mock", kind="mock", vendor="mock", api_key="", options={"reply": "hi"})
    make_deployment(provider, "mock-gpt")
    server = start_gateway(tmp_path)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _call(client: openai.OpenAI) -> str:
    try:
        client.chat.completions.create(model="mock-gpt", messages=HELLO)
    except openai.AuthenticationError as exc:
        return str(exc.body.get("code") if isinstance(exc.body, dict) else exc.body)
    return "ok"


def test_revoked_key_stops_working_on_every_worker(gunicorn: LiveGateway) -> None:
    key, secret = key_issue(name="to-revoke")
    # A new connection per request, so the kernel spreads requests over both workers.
    client = openai.OpenAI(
        api_key=secret,
        base_url=gunicorn.url + "/v1",
        max_retries=0,
        timeout=10.0,
        default_headers={"Connection": "close"},
    )

    # Warm both workers: each caches the key after its first request.
    for sent in range(1, 601):
        assert _call(client) == "ok"
        if sent % 20 == 0:
            served: dict[int, int] = {}
            for pid, status in gunicorn.served():
                assert status == 200
                served[pid] = served.get(pid, 0) + 1
            if len(served) == 2 and min(served.values()) >= 5 and sent >= 40:
                break
    else:
        pytest.fail(f"the requests did not reach both workers: {gunicorn.served()[-10:]}")
    before_revocation = len(gunicorn.served())

    key_revoke(key=key)
    made = sent  # requests answered so far
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        results = [_call(client) for _ in range(20)]
        made += 20
        assert set(results) <= {"ok", "key_revoked"}, results
        if all(r == "key_revoked" for r in results):
            break
        assert time.monotonic() < deadline, f"still accepted {DEADLINE_SECONDS} s after revocation: {results}"

    # Both workers refuse it now (not only the one that happened to answer the last 20).
    for _ in range(200):
        refused_by = {pid for pid, status in gunicorn.served()[before_revocation:] if status == 401}
        if len(refused_by) == 2:
            break
        assert _call(client) == "key_revoked"
        made += 1
    else:
        pytest.fail("only one worker answered after the revocation")
    # An access log line lands just after its response: wait for the last ones before reading the tail.
    log_deadline = time.monotonic() + 5
    while len(gunicorn.served()) < made and time.monotonic() < log_deadline:
        time.sleep(0.05)
    tail = gunicorn.served()[-20:]
    assert all(status == 401 for _, status in tail), tail
