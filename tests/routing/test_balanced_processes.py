"""``balanced`` stays even across real gunicorn worker processes, and a strategy switch reaches them all.

The round-robin position is per process (routing/strategies/balanced.py explains why):
each process is off by at most one request per deployment, so with three workers
3,000 requests over three equal deployments give 1,000 +/- 3 each; the check allows
the documented 1% (+/- 10).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.procs import LiveGateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 3
REQUESTS = 3000
THREADS = 16


@pytest.fixture
def gunicorn(tmp_path: Path, redis_client: Any) -> Iterator[LiveGateway]:
    server = start_gateway(
        tmp_path, workers=WORKERS, clean=True, args=("--graceful-timeout", "5"), GATEWAY_CONFIG_POLL_SECONDS="0.2"
    )
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


@pytest.fixture
def balanced_model(
    make_provider: Any, make_deployment: Any, issue_key: Any, staff_groups: dict[str, Any]
) -> dict[str, Any]:
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.contrib.auth.models import User

    from routing.models import RoutingSettings

    provider = make_provider("mockp", kind="mock")
    for name in ("mock-a", "mock-b", "mock-c"):
        make_deployment(provider, "gpt-4o", name=name)
    RoutingSettings.objects.update_or_create(pk=1, defaults={"strategy": "balanced"})
    _, secret = issue_key()
    # the server runs the production settings (PBKDF2): hash the way it verifies, cheaply
    ops = User.objects.create(
        username="ops",
        is_staff=True,
        password=PBKDF2PasswordHasher().encode("ops-password-1", "fixedsalt1234", iterations=1000),
    )
    ops.groups.add(staff_groups["operators"])
    return {"secret": secret}


def access_log_pids(server: LiveGateway, expected: int) -> Counter[int]:
    """Completions served per worker pid, from the access log (a line lands just after its response)."""
    deadline = time.monotonic() + 10
    while True:
        served = Counter(pid for pid, status in server.served() if status == 200)
        if sum(served.values()) >= expected or time.monotonic() > deadline:
            return served
        time.sleep(0.1)


def send_all(url: str, secret: str, count: int) -> list[requests.Response]:
    local = threading.local()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    # a new connection per request: otherwise one worker may accept every keep-alive connection
    headers = {"Authorization": f"Bearer {secret}", "Connection": "close"}

    def one(_: int) -> requests.Response:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return response

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(one, range(count)))


def test_balanced_is_even_across_worker_processes(gunicorn: LiveGateway, balanced_model: dict[str, Any]) -> None:
    workers = set(gunicorn.worker_pids())
    assert len(workers) == WORKERS
    responses = send_all(gunicorn.url, balanced_model["secret"], REQUESTS)
    assert {r.headers["x-gateway-strategy"] for r in responses} == {"balanced"}
    counts = Counter(r.headers["x-gateway-deployment"] for r in responses)
    assert set(counts) == {"mock-a", "mock-b", "mock-c"}
    for count in counts.values():
        assert abs(count - REQUESTS // 3) <= 10, counts
    served_by = access_log_pids(gunicorn, REQUESTS)
    assert sum(served_by.values()) == REQUESTS, served_by
    assert set(served_by) == workers, served_by  # every worker process took its share

    # A switch through the JWT endpoint reaches every worker within a second.
    token = requests.post(
        gunicorn.url + "/api/token/", json={"username": "ops", "password": "ops-password-1"}, timeout=10
    ).json()["access"]
    switched = requests.post(
        gunicorn.url + "/admin/routing/strategy",
        data=b'{"strategy": "model"}',
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert switched.status_code == 200, switched.text
    time.sleep(1.0)
    after = send_all(gunicorn.url, balanced_model["secret"], 150)
    assert Counter(r.headers["x-gateway-strategy"] for r in after) == {"model": 150}
    assert {r.headers["x-gateway-deployment"] for r in after} == {"mock-a"}
