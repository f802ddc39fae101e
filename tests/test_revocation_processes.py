"""A revoked key stops working on every server process, not only the one that revoked it.

Real gunicorn (the production config, two gevent workers) serves the test database; both
workers are warmed so each has the key in its in-process cache; the test process revokes
the key and then polls until every request is refused. The 5-second deadline is the
correctness bound (each process polls the configuration version every 0.5 s), not a
speed measurement.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import quote
from urllib.request import urlopen

import openai
import pytest
from django.conf import settings
from django.db import connection

from accounts.services import key_issue, key_revoke

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
HELLO = [{"role": "user", "content": "Hello"}]
LOG_LINE = re.compile(r"^<(\d+)> (\d{3}) /v1/chat/completions$")
DEADLINE_SECONDS = 5.0


def _database_url() -> str:
    db = connection.settings_dict
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "gunicorn.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "GATEWAY_CONFIG_POLL_SECONDS": "0.5",
            "GATEWAY_PLAIN_STATIC": "1",
            "GATEWAY_VAR_DIR": str(tmp_path / "var"),
            "SECRET_KEY": settings.SECRET_KEY,
            "JWT_SIGNING_KEY": settings.JWT_SIGNING_KEY,
            "KEY_PEPPER": settings.KEY_PEPPER,
            "WEB_CONCURRENCY": "2",
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "gatewaysite/gunicorn.conf.py",
                "--workers",
                "2",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--access-logfile",
                "-",
                "--access-logformat",
                "%(p)s %(s)s %(U)s",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urlopen(self.url + "/healthz", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (URLError, OSError):
                pass
            time.sleep(0.1)
        pytest.fail(f"gunicorn did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def completions(self) -> list[tuple[int, int]]:
        """(worker pid, status) of every completion request so far, in order."""
        found = []
        for line in self.log().splitlines():
            match = LOG_LINE.match(line.strip())
            if match:
                found.append((int(match.group(1)), int(match.group(2))))
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@pytest.fixture
def gunicorn(tmp_path: Path, make_provider: Any, make_deployment: Any, redis_client: Any) -> Any:
    provider = make_provider("mock", kind="mock", vendor="mock", api_key="", options={"reply": "hi"})
    make_deployment(provider, "mock-gpt")
    server = Gunicorn(tmp_path)
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


def test_revoked_key_stops_working_on_every_worker(gunicorn: Gunicorn) -> None:
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
            for pid, status in gunicorn.completions():
                assert status == 200
                served[pid] = served.get(pid, 0) + 1
            if len(served) == 2 and min(served.values()) >= 5 and sent >= 40:
                break
    else:
        pytest.fail(f"the requests did not reach both workers: {gunicorn.completions()[-10:]}")
    before_revocation = len(gunicorn.completions())

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
        refused_by = {pid for pid, status in gunicorn.completions()[before_revocation:] if status == 401}
        if len(refused_by) == 2:
            break
        assert _call(client) == "key_revoked"
        made += 1
    else:
        pytest.fail("only one worker answered after the revocation")
    # An access log line lands just after its response: wait for the last ones before reading the tail.
    log_deadline = time.monotonic() + 5
    while len(gunicorn.completions()) < made and time.monotonic() < log_deadline:
        time.sleep(0.05)
    tail = gunicorn.completions()[-20:]
    assert all(status == 401 for _, status in tail), tail
