"""``balanced`` stays even across real gunicorn worker processes, and a strategy switch reaches them all.

The round-robin position is per process (routing/strategies/balanced.py explains why):
each process is off by at most one request per deployment, so with three workers
3,000 requests over three equal deployments give 1,000 +/- 3 each; the check allows
the documented 1% (+/- 10).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
REQUESTS = 3000
THREADS = 16


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def gunicorn(tmp_path: Path, redis_client: Any) -> Iterator[dict[str, Any]]:
    from django.conf import settings

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GATEWAY_", "GUNICORN_"))},
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "GATEWAY_CONFIG_POLL_SECONDS": "0.2",
        "GATEWAY_PLAIN_STATIC": "1",
        "GATEWAY_VAR_DIR": str(tmp_path / "var"),
        "KEY_PEPPER": settings.KEY_PEPPER,
        "SECRET_KEY": settings.SECRET_KEY,
        "JWT_SIGNING_KEY": settings.JWT_SIGNING_KEY,
    }
    log_path = tmp_path / "gunicorn.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "gatewaysite.wsgi:application",
            "--worker-class",
            "gevent",
            "--workers",
            str(WORKERS),
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "5",
            "--access-logfile",
            "-",
            "--access-logformat",
            "served-by=%(p)s %(s)s %(U)s",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            booted = re.findall(r"Booting worker with pid: (\d+)", log_path.read_text())
            try:
                ready = requests.get(url + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:  # not listening yet, or a worker still booting
                ready = False
            if ready and len(booted) == WORKERS:
                break
            assert time.monotonic() < deadline, "gunicorn did not start:\n" + log_path.read_text()
            time.sleep(0.2)
        yield {"url": url, "workers": booted, "log": log_path}
    finally:
        process.send_signal(signal.SIGQUIT)  # quick shutdown
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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


def access_log_pids(log: Path, expected: int) -> Counter[str]:
    """Completions served per worker pid, from the access log (a line lands just after its response)."""
    deadline = time.monotonic() + 10
    while True:
        served = Counter(re.findall(r"served-by=<(\d+)> 200 /v1/chat/completions", log.read_text()))
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


def test_balanced_is_even_across_worker_processes(gunicorn: dict[str, Any], balanced_model: dict[str, Any]) -> None:
    assert len(set(gunicorn["workers"])) == WORKERS
    responses = send_all(gunicorn["url"], balanced_model["secret"], REQUESTS)
    assert {r.headers["x-gateway-strategy"] for r in responses} == {"balanced"}
    counts = Counter(r.headers["x-gateway-deployment"] for r in responses)
    assert set(counts) == {"mock-a", "mock-b", "mock-c"}
    for count in counts.values():
        assert abs(count - REQUESTS // 3) <= 10, counts
    served_by = access_log_pids(gunicorn["log"], REQUESTS)
    assert sum(served_by.values()) == REQUESTS, served_by
    assert set(served_by) == set(gunicorn["workers"]), served_by  # every worker process took its share

    # A switch through the JWT endpoint reaches every worker within a second.
    token = requests.post(
        gunicorn["url"] + "/api/token/", json={"username": "ops", "password": "ops-password-1"}, timeout=10
    ).json()["access"]
    switched = requests.post(
        gunicorn["url"] + "/admin/routing/strategy",
        data=b'{"strategy": "model"}',
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert switched.status_code == 200, switched.text
    time.sleep(1.0)
    after = send_all(gunicorn["url"], balanced_model["secret"], 150)
    assert Counter(r.headers["x-gateway-strategy"] for r in after) == {"model": 150}
    assert {r.headers["x-gateway-deployment"] for r in after} == {"mock-a"}
