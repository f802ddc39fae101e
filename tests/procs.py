"""Real processes that tests start (and break): gunicorn serving the gateway, a private Redis, a private Postgres.

The one place for live-server helpers: a free loopback port, the environment a gateway
process gets, a gunicorn with the production config waiting until every worker is up,
its access log read back as (worker pid, status, path). Each process runs on a free
loopback port in the test's temporary directory and is stopped by its fixture. Breaking
them is real: SIGKILL, ``pg_ctl stop``, a Redis shut down.

A gateway started here serves the test database: tests that use it need
``pytest.mark.django_db(transaction=True)`` so the server process sees their rows.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import quote
from urllib.request import urlopen

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivateRedis:
    """A redis-server of the test's own on a free port: it can be stopped without harming anyone.

    ``durable`` (the default): an fsync'd append-only file, so what it acknowledged survives
    a kill or a stop. ``durable=False``: no persistence at all, so a restart comes back empty.
    """

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        self.directory = directory
        self.durable = durable
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed (apt-get install redis-server)"
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]),
                "--save",
                "",
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(lambda: _listening(self.port), 20, f"redis on port {self.port}")
        return self

    def stop(self) -> None:
        """Shut down (SIGTERM); when durable, its data stays in the append-only file for the next start."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
        self.process = None

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    binary = shutil.which(name)
    assert binary, f"{name} is needed (apt-get install postgresql)"
    return binary


class PrivatePostgres:
    """A Postgres cluster of its own (initdb in a temporary directory), run as the postgres user when root.

    The directory is made with ``tempfile`` directly under the system's temporary
    directory: pytest's own is private to root, and the postgres user must reach it.
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gw-test-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/gateway"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            pwd.getpwnam(self._user)  # the Postgres packages create it

    def _run(self, *cmd: str) -> None:
        full = ["runuser", "-u", self._user, "--", *cmd] if self._user else list(cmd)
        done = subprocess.run(full, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"

    def init(self) -> PrivatePostgres:
        if self._user:
            shutil.chown(self.directory, self._user)
            self.directory.chmod(0o700)
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        self._run(_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "gateway")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _postgres_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "pg.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def current_database_url() -> str:
    """The URL of the test database (for processes the test starts)."""
    from django.db import connection

    db = connection.settings_dict
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def gateway_env(
    *,
    var_dir: Path,
    database_url: str | None = None,
    redis_url: str | None = None,
    clean: bool = False,
    **overrides: str,
) -> dict[str, str]:
    """The environment of a gateway process: the test's own, the production settings on the test's
    database (or ``database_url``) and Redis (or ``redis_url``), the test's secrets, a 0.5 s
    configuration poll; ``overrides`` last. ``clean`` leaves out the test's own ``DJANGO_*``,
    ``GATEWAY_*`` and ``GUNICORN_*`` variables."""
    inherited = os.environ.items()
    if clean:
        inherited = ((k, v) for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GATEWAY_", "GUNICORN_")))
    return {
        **dict(inherited),
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
        "DATABASE_URL": current_database_url() if database_url is None else database_url,
        "REDIS_URL": settings.REDIS_URL if redis_url is None else redis_url,
        "GATEWAY_CONFIG_POLL_SECONDS": "0.5",
        "GATEWAY_PLAIN_STATIC": "1",
        "GATEWAY_LATENCY_QUANTILE_CACHE_SECONDS": "0.25",  # the production default (tests/settings.py turns it off)
        "GATEWAY_VAR_DIR": str(var_dir),
        "SECRET_KEY": settings.SECRET_KEY,
        "JWT_SIGNING_KEY": settings.JWT_SIGNING_KEY,
        "KEY_PEPPER": settings.KEY_PEPPER,
        "LOG_LEVEL": "WARNING",
        **overrides,
    }


def manage(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def python(env: dict[str, str], code: str, *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Django process with ``env`` (not the test's database)."""
    prelude = "import django; django.setup()\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"python failed:\n{done.stdout}\n{done.stderr}"
    return done


#: ``<worker pid> status path``: what :meth:`LiveGateway.served` reads back.
ACCESS_LOG_FORMAT = "%(p)s %(s)s %(U)s"
ACCESS_LINE = re.compile(r"^<(\d+)> (\d{3}) (\S+)$")


class LiveGateway:
    """``gunicorn -c gatewaysite/gunicorn.conf.py`` (gevent workers) on a free loopback port.

    ``env`` is the whole environment (see :func:`gateway_env`, or :func:`start_gateway` for
    both in one call); stdout and stderr go to ``log_path``. With ``access_log`` (the
    default) the access log goes there too, one ``<pid> status path`` line per request;
    ``access_log=None`` leaves the access log to the configuration. ``args`` are more
    gunicorn options.
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        workers: int = 2,
        access_log: str | None = ACCESS_LOG_FORMAT,
        args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path
        self._log = log_path.open("wb")
        logging = ["--access-logfile", "-", "--access-logformat", access_log] if access_log else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gatewaysite/gunicorn.conf.py"]
            + ["--workers", str(workers), "--bind", f"127.0.0.1:{self.port}", *args, *logging],
            cwd=ROOT,
            env={**env, "WEB_CONCURRENCY": str(workers)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 60.0) -> LiveGateway:
        """Until ``/healthz`` answers 200 and every worker process is up."""

        def healthy() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urlopen(self.url + "/healthz", timeout=1.0) as response:
                    return response.status == 200
            except (URLError, OSError):
                return False

        wait_until(healthy, timeout, "gunicorn to answer /healthz")
        wait_until(lambda: len(self.worker_pids()) >= self.workers, timeout, "gunicorn workers")
        return self

    def worker_pids(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def served(self, path: str = "/v1/chat/completions") -> list[tuple[int, int]]:
        """(worker pid, status) of every request to ``path`` so far, in order, from the access log."""
        found = []
        for line in self.log().splitlines():
            match = ACCESS_LINE.match(line.strip())
            if match and match.group(3) == path:
                found.append((int(match.group(1)), int(match.group(2))))
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def start_gateway(
    tmp_path: Path,
    *,
    workers: int = 2,
    redis_url: str | None = None,
    clean: bool = False,
    access_log: str | None = ACCESS_LOG_FORMAT,
    args: Sequence[str] = (),
    **env: str,
) -> LiveGateway:
    """A :class:`LiveGateway` on the test database and Redis (or ``redis_url``), ``env`` over
    :func:`gateway_env`; its log is a new ``gunicorn*.log`` in ``tmp_path``. Not yet healthy:
    call ``wait_healthy()``."""
    log_path = tmp_path / "gunicorn.log"
    serial = 1
    while log_path.exists():
        serial += 1
        log_path = tmp_path / f"gunicorn-{serial}.log"
    environment = gateway_env(var_dir=tmp_path / "var", redis_url=redis_url, clean=clean, **env)
    return LiveGateway(environment, log_path, workers=workers, access_log=access_log, args=args)
