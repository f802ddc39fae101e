"""A live gateway under the production server (gunicorn, gevent worker) for tests.

It serves the test database and Redis: tests that use it need
``pytest.mark.django_db(transaction=True)`` so the server process sees their rows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError
from urllib.parse import quote
from urllib.request import urlopen

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def served_database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class LiveGateway:
    """``gunicorn -c gatewaysite/gunicorn.conf.py`` on a free loopback port; ``env`` overrides settings."""

    def __init__(self, tmp_path: Path, *, workers: int = 1, env: dict[str, str] | None = None) -> None:
        from django.conf import settings

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "gunicorn.log"
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GATEWAY_", "GUNICORN_"))},
            "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
            "DATABASE_URL": served_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "GATEWAY_CONFIG_POLL_SECONDS": "0.2",
            "GATEWAY_PLAIN_STATIC": "1",
            "GATEWAY_SEED_PRICING": "0",
            "GATEWAY_VAR_DIR": str(tmp_path / "var"),
            "SECRET_KEY": settings.SECRET_KEY,
            "JWT_SIGNING_KEY": settings.JWT_SIGNING_KEY,
            "KEY_PEPPER": settings.KEY_PEPPER,
            "WEB_CONCURRENCY": str(workers),
            **(env or {}),
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gatewaysite/gunicorn.conf.py"]
            + ["--bind", f"127.0.0.1:{self.port}", "--graceful-timeout", "5"],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 60.0) -> LiveGateway:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urlopen(self.url + "/healthz", timeout=1.0) as response:
                    if response.status == 200:
                        return self
            except (URLError, OSError):
                pass
            time.sleep(0.1)
        pytest.fail(f"gunicorn did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def raw_exchange(port: int, request: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``request`` bytes on a new connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one HTTP/1.1 response with a Content-Length."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None:
        return status, headers, rest[: int(length)]
    if "chunked" not in headers.get("transfer-encoding", ""):
        return status, headers, rest
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return status, headers, body
