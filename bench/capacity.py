"""How many gateway processes one Redis and one Postgres carry, measured (docs/scaling.md).

    .venv/bin/python -m bench.capacity [--workers 30] [--duration 15] [--idle-seconds 40]

Runs its own ``redis-server`` (``--redis-port``, no persistence) so that Redis' own CPU
(``INFO cpu``) and command counts (``INFO commandstats``) belong to the gateway alone,
and its own Postgres database (``--database-url``, dropped and recreated), whose
backends are found in ``pg_stat_activity`` and timed from ``/proc/<pid>/stat``. Three
measurements:

1. **Load**: one gunicorn gevent worker under wrk (16 connections) with a key without
   limits and with a key that has a budget and RPM/TPM limits (every request runs the
   admission script). Redis CPU per request served, and the commands per request.
2. **Ingestion**: the stream those requests left is drained with the consumer's own code
   (``usage.consumer.drain``, its default batches), as the Celery task does: CPU of the
   Postgres backend and of Redis per event.
3. **Idle**: ``--workers`` gunicorn workers, each warmed with traffic (so each runs its
   live-latency sync, config poller and acknowledgements), then left without requests
   for ``--idle-seconds`` while the live-latency window stays full (as under traffic):
   Redis CPU per process-second, Postgres transactions and connections per process.

It prints a table and the arithmetic (``capacity_figures``); ``--json`` writes every
figure. The pure parts (deltas, arithmetic, the table) are tested in
tests/bench/test_capacity.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import procs
from bench.report import machine, parse_proc_stat_cpu_ticks, parse_wrk

ROOT = procs.ROOT
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODEL = "bench-model"
CONNECTIONS = 16


def log(message: str) -> None:
    print(f"[capacity {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- pure: deltas, arithmetic, the table (tested) ---------------------------------------


def redis_cpu_seconds(info_cpu: dict[str, Any]) -> float:
    """Redis' whole CPU time (every thread, user + system) from ``INFO cpu``."""
    return float(info_cpu["used_cpu_user"]) + float(info_cpu["used_cpu_sys"])


def commandstats_delta(
    before: dict[str, Any], after: dict[str, Any], *, ignore: tuple[str, ...] = ("info",)
) -> dict[str, tuple[int, int]]:
    """Command -> (calls, microseconds) between two ``INFO commandstats`` readings.

    Commands a Lua script runs appear in their own rows too, and their time is also part
    of the script's (EVALSHA's) row: rows do not add up to Redis' CPU; ``INFO cpu`` does
    (it also counts the network system calls no row holds).
    """
    delta: dict[str, tuple[int, int]] = {}
    for name, stats in after.items():
        old = before.get(name, {})
        calls = int(stats.get("calls", 0)) - int(old.get("calls", 0))
        usec = int(stats.get("usec", 0)) - int(old.get("usec", 0))
        command = name.removeprefix("cmdstat_")
        if calls > 0 and command not in ignore:  # the measurement's own INFO calls
            delta[command] = (calls, usec)
    return delta


def per_unit(delta: dict[str, tuple[int, int]], units: float) -> list[dict[str, Any]]:
    """Each command's calls per unit (request, event, process-second) and time per call, busiest first."""
    rows = []
    for name, (calls, usec) in sorted(delta.items(), key=lambda item: -item[1][1]):
        rows.append(
            {
                "command": name,
                "calls_per_unit": round(calls / units, 3) if units else None,
                "us_per_call": round(usec / calls, 2),
                "us_per_unit": round(usec / units, 2) if units else None,
            }
        )
    return rows


def statements_per_minute(before: dict[str, int], after: dict[str, int], process_seconds: float) -> dict[str, float]:
    """Query -> calls per process per minute between two ``pg_stat_statements`` readings, busiest first."""
    rates = {
        query: round((calls - before.get(query, 0)) * 60 / process_seconds, 1)
        for query, calls in after.items()
        if calls > before.get(query, 0) and "pg_stat_" not in query
    }
    return dict(sorted(rates.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class Measured:
    """What the three measurements gave (CPU in microseconds)."""

    rps_per_process: float  # one worker at 16 connections, the limited key
    redis_us_per_request: float  # Redis CPU per request served (limited key)
    redis_us_per_event_drained: float  # Redis CPU per event the consumer moved
    pg_us_per_event: float  # Postgres backend CPU per event ingested
    redis_idle_us_per_process_s: float  # Redis CPU per idle process per second
    pg_idle_us_per_process_s: float  # Postgres backend CPU per idle process per second
    pg_xacts_per_process_min: float  # Postgres transactions per idle process per minute
    pg_connections_per_process: float  # connections held by an idle process
    max_connections: int
    reserved_connections: int = 3  # superuser_reserved_connections


def capacity_figures(m: Measured, *, utilisation: float = 1.0) -> dict[str, float]:
    """The arithmetic of docs/scaling.md: what one core of Redis and of Postgres carries.

    A process serving ``r`` requests a second costs Redis ``r * (request + drain) + idle``
    microseconds a second; one core has 1,000,000 (times ``utilisation``, the share one
    is willing to run it at). Postgres likewise with the ingestion per event and the idle
    polling. Connections: ``max_connections`` less the reserved ones, divided by what one
    process holds (the consumers' and Celery's own connections come off that too).
    """
    budget = 1_000_000 * utilisation
    redis_per_request = m.redis_us_per_request + m.redis_us_per_event_drained
    redis_per_process = m.rps_per_process * redis_per_request + m.redis_idle_us_per_process_s
    pg_per_process = m.rps_per_process * m.pg_us_per_event + m.pg_idle_us_per_process_s
    usable = max(0, m.max_connections - m.reserved_connections)
    return {
        "redis_rps_per_core": round(budget / redis_per_request) if redis_per_request else 0,
        "redis_processes_busy": round(budget / redis_per_process, 1) if redis_per_process else 0,
        "redis_processes_idle": round(budget / m.redis_idle_us_per_process_s) if m.redis_idle_us_per_process_s else 0,
        "pg_events_per_core": round(budget / m.pg_us_per_event) if m.pg_us_per_event else 0,
        "pg_processes_busy": round(budget / pg_per_process, 1) if pg_per_process else 0,
        "pg_processes_idle": round(budget / m.pg_idle_us_per_process_s) if m.pg_idle_us_per_process_s else 0,
        "pg_processes_by_connections": (
            round(usable / m.pg_connections_per_process) if m.pg_connections_per_process else usable
        ),
    }


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{int(value):,}" if isinstance(value, (int, float)) else str(value)


def render(results: dict[str, Any]) -> str:
    """The table printed at the end (and pasted into docs/scaling.md)."""
    m = results["measured"]
    f = results["figures"]
    lines = [
        "| measured | figure |",
        "|---|---|",
        f"| one worker, 16 connections, key without limits: req/s | {_n(results['load']['plain']['rps'])} |",
        f"| one worker, 16 connections, budget + RPM/TPM key: req/s | {_n(m['rps_per_process'])} |",
        f"| Redis CPU per request, key without limits (µs) | {_n(results['load']['plain']['redis_us_per_request'])} |",
        f"| Redis CPU per request, budget + RPM/TPM key (µs) | {_n(m['redis_us_per_request'])} |",
        f"| Redis CPU per event drained by the consumer (µs) | {_n(m['redis_us_per_event_drained'])} |",
        f"| Postgres backend CPU per event ingested (µs) | {_n(m['pg_us_per_event'])} |",
        f"| idle process: Redis CPU per second (µs) | {_n(m['redis_idle_us_per_process_s'])} |",
        f"| idle process: Postgres backend CPU per second (µs) | {_n(m['pg_idle_us_per_process_s'])} |",
        f"| idle process: Postgres transactions per minute | {_n(m['pg_xacts_per_process_min'])} |",
        f"| idle process: Postgres connections held | {_n(m['pg_connections_per_process'])} |",
        f"| idle process: Redis connections held | {_n(results['idle'].get('redis_connections_per_process'))} |",
        "",
        "| one core carries | figure |",
        "|---|---|",
        f"| Redis: requests/s (budget + RPM/TPM key, drain included) | {_n(f['redis_rps_per_core'])} |",
        f"| Redis: processes at the measured req/s each | {_n(f['redis_processes_busy'])} |",
        f"| Redis: idle processes | {_n(f['redis_processes_idle'])} |",
        f"| Postgres: events ingested/s | {_n(f['pg_events_per_core'])} |",
        f"| Postgres: processes at the measured req/s each (ingestion + polling) | {_n(f['pg_processes_busy'])} |",
        f"| Postgres: idle processes (polling) | {_n(f['pg_processes_idle'])} |",
        f"| Postgres: processes within max_connections = {m['max_connections']} | "
        f"{_n(f['pg_processes_by_connections'])} |",
    ]
    queries = results["idle"].get("queries_per_process_min") or {}
    if queries:
        lines += ["", "Postgres queries per idle process per minute:", "", "| query | calls |", "|---|---|"]
        lines += [f"| `{' '.join(query.split())[:90]}` | {_n(calls)} |" for query, calls in list(queries.items())[:6]]
    for label, rows in (
        ("per request, budget + RPM/TPM key", results["load"]["limited"]["commands"]),
        ("per request, key without limits", results["load"]["plain"]["commands"]),
        ("per event drained", results["drain"]["commands"]),
        ("per idle process-second", results["idle"]["commands"]),
    ):
        lines += ["", f"Redis commands {label}:", "", "| command | calls | µs/call | µs |", "|---|---|---|---|"]
        lines += [
            f"| {row['command']} | {_n(row['calls_per_unit'])} | {_n(row['us_per_call'])} | {_n(row['us_per_unit'])} |"
            for row in rows[:8]
        ]
    return "\n".join(lines)


# --- measuring --------------------------------------------------------------------------


def backend_cpu_us(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += parse_proc_stat_cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
        except OSError:
            continue
    return round(total * 1_000_000 / CLK_TCK)


class Postgres:
    """Statistics of the benchmark's database, read over a connection to another database."""

    def __init__(self, url: str) -> None:
        import psycopg

        parts = urlsplit(url)
        self.url = url
        self.name = parts.path.lstrip("/")
        self.admin = psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True)

    def recreate(self) -> None:
        self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.execute(f'CREATE DATABASE "{self.name}"')

    def backends(self) -> list[int]:
        rows = self.admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'", [self.name]
        ).fetchall()
        return [int(row[0]) for row in rows]

    def counters(self) -> dict[str, int]:
        self.admin.execute("SELECT pg_stat_clear_snapshot()")
        row = self.admin.execute(
            "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = %s", [self.name]
        ).fetchone()
        assert row is not None
        return {"xacts": int(row[0]), "sessions": int(row[1])}

    def enable_statements(self) -> bool:
        """``pg_stat_statements`` in the benchmark's database, when the server preloads it."""
        import psycopg

        try:  # the view is read over the connection to the other database
            self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.admin.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error:
            return False
        return True

    def statements(self) -> dict[str, int]:
        """Query text -> calls, in the benchmark's database (``pg_stat_statements``)."""
        rows = self.admin.execute(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
            [self.name],
        ).fetchall()
        return {str(query): int(calls) for query, calls in rows}

    def max_connections(self) -> tuple[int, int]:
        row = self.admin.execute(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


class PeakSampler(procs.Sampler):
    """The highest value ``read`` returned, sampled every 0.1 s while the block runs."""

    def __init__(self, read: Any) -> None:
        super().__init__(0.1)
        self.read = read
        self.peak = 0

    def sample(self) -> None:
        self.peak = max(self.peak, self.read())


class Capacity:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(args.tmp)
        self.services: list[procs.Service] = []
        self.redis_url = f"redis://127.0.0.1:{args.redis_port}/4"
        self.url = f"http://127.0.0.1:{args.gateway_port}/v1/chat/completions"
        self.env = dict(os.environ)
        self.env.update(
            {
                "DATABASE_URL": args.database_url,
                "REDIS_URL": self.redis_url,
                "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
                "DEBUG": "0",
                "GATEWAY_VAR_DIR": str(self.tmp / "var"),
            }
        )
        for name in ("GATEWAY_RECORDING_ENABLED", "GUNICORN_ACCESS_LOG", "WEB_CONCURRENCY", "CELERY_BROKER_URL"):
            self.env.pop(name, None)
        os.environ.clear()
        os.environ.update(self.env)
        # This process only configures and drains: no config poller of its own in the figures.
        os.environ["GATEWAY_CONFIG_POLL_SECONDS"] = "0"
        self.window_fields = 0
        self.stop_postgres: list[str] = []

    # services

    def start(self, service: procs.Service) -> procs.Service:
        self.services.append(service)
        return service

    def stop(self, service: procs.Service) -> None:
        service.stop()
        self.services.remove(service)

    def start_postgres(self) -> str:
        """A private Postgres cluster on a Unix socket (no TCP port): its statistics are ours alone.

        ``max_connections`` 300 (every idle worker holds one) and ``pg_stat_statements``
        loaded, defaults otherwise. Started as the ``postgres`` user when run as root.
        """
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
        if not versions:
            raise RuntimeError("no Postgres server binaries under /usr/lib/postgresql (or pass --database-url)")
        binaries = versions[-1].parent
        base = self.tmp / "postgres"
        data, socket_dir = base / "data", base / "socket"
        socket_dir.mkdir(parents=True, exist_ok=True)
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres", str(base)], check=True)
        if not (data / "PG_VERSION").exists():
            subprocess.run(
                [*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                check=True,
                capture_output=True,
            )
        options = f"-k {socket_dir} -c listen_addresses= -c max_connections=300"
        options += " -c shared_preload_libraries=pg_stat_statements"
        pg_ctl = [*as_user, str(binaries / "pg_ctl"), "-D", str(data)]
        log_file = base / "postgres.log"
        subprocess.run([*pg_ctl, "-l", str(log_file), "-o", options, "-w", "start"], check=True, capture_output=True)
        self.stop_postgres = [*pg_ctl, "-m", "fast", "-w", "stop"]
        url = f"postgres://postgres@{str(socket_dir).replace('/', '%2F')}/gw_capacity"
        import psycopg

        deadline = time.monotonic() + 60
        while True:  # until it accepts connections (after a crash it recovers first)
            try:
                psycopg.connect(url.replace("/gw_capacity", "/postgres")).close()
                return url
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def start_redis(self) -> None:
        data = self.tmp / "redis"
        data.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(self.args.redis_port), "--bind", "127.0.0.1", "--dir", str(data)]
        cmd += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        self.start(procs.Service("redis", cmd, log=self.tmp / "logs" / "redis.log").start())
        procs.wait_port(self.args.redis_port)
        import redis

        self.redis = redis.Redis.from_url(self.redis_url)

    def gateway(self, workers: int) -> tuple[procs.Service, list[int]]:
        service = self.start(
            procs.start_gateway(
                self.args.gateway_port,
                self.env,
                workers=workers,
                recording=True,
                log=self.tmp / "logs" / "gw.log",
                root=Path(self.args.gateway_root).resolve() if self.args.gateway_root else ROOT,
            )
        )
        return service, procs.children(service.pid)

    def wrk(self, key: str, connections: int, duration: float) -> dict[str, Any]:
        output = procs.run_wrk(self.url, connections=connections, duration=duration, key=key, model=MODEL)
        return parse_wrk(output)

    def redis_state(self) -> tuple[float, dict[str, Any]]:
        return redis_cpu_seconds(self.redis.info("cpu")), self.redis.info("commandstats")

    # phases

    def setup(self) -> tuple[str, str]:
        if self.args.private_postgres:
            self.args.database_url = self.start_postgres()
            self.env["DATABASE_URL"] = os.environ["DATABASE_URL"] = self.args.database_url
        self.pg = Postgres(self.args.database_url)
        self.pg.recreate()
        self.start_redis()
        done = subprocess.run(
            [procs.PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"migrate failed: {done.stderr[-2000:]}")
        self.statements = self.pg.enable_statements()
        import django

        django.setup()
        from accounts.services import key_issue
        from bench.bench import configure_gateway

        plain = configure_gateway(self.args.upstream_port, self.args.upstream_port)
        _key, limited = key_issue(
            name="capacity-limited", budget_usd=Decimal("1000000000"), rpm_limit=2_000_000_000, tpm_limit=2_000_000_000
        )
        self.start(procs.start_nginx(self.args.upstream_port, self.tmp / "nginx"))
        return plain, limited

    def load(self, key: str, pids: list[int]) -> dict[str, Any]:
        self.wrk(key, CONNECTIONS, 2)  # warm: key cache, scripts, pools
        cpu, stats = self.redis_state()
        worker = procs.cpu_ticks(pids)
        result = self.wrk(key, CONNECTIONS, self.args.duration)
        cpu_after, stats_after = self.redis_state()
        requests = result["requests"]
        delta = commandstats_delta(stats, stats_after)
        return {
            "rps": result["rps"],
            "requests": requests,
            "errors": result["errors"],
            "p50_ms": result.get("p50_ms"),
            "worker_cpu_us_per_request": round((procs.cpu_ticks(pids) - worker) * 1e6 / CLK_TCK / requests, 1),
            "redis_us_per_request": round((cpu_after - cpu) * 1e6 / requests, 2),
            "commands": per_unit(delta, requests),
        }

    def drain(self) -> dict[str, Any]:
        from django.db import connection

        from usage.consumer import drain

        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = int(cursor.fetchone()[0])
        pending = int(self.redis.xlen(os.environ.get("GATEWAY_USAGE_STREAM", "{gw}:usage")))
        cpu, stats = self.redis_state()
        pg_before = backend_cpu_us([backend])
        own = time.process_time()
        started = time.monotonic()
        events = 0
        while moved := drain():
            events += moved
        seconds = time.monotonic() - started
        own_us = (time.process_time() - own) * 1e6
        pg_us = backend_cpu_us([backend]) - pg_before
        cpu_after, stats_after = self.redis_state()
        connection.close()  # not counted among the idle processes' connections
        return {
            "events": events,
            "stream_length_before": pending,
            "seconds": round(seconds, 2),
            "events_per_s": round(events / seconds) if seconds else None,
            "pg_us_per_event": round(pg_us / events, 1) if events else None,
            "consumer_us_per_event": round(own_us / events, 1) if events else None,
            "redis_us_per_event": round((cpu_after - cpu) * 1e6 / events, 2) if events else None,
            "commands": per_unit(commandstats_delta(stats, stats_after), events),
        }

    def syncing(self) -> int:
        """Processes that reported in the live sync's last full second (their in-flight field)."""
        second = int(time.time()) - 1
        return int(self.redis.hlen(f"gw:busy:{second}"))

    def polling(self) -> int:
        """Processes whose config poller acknowledged lately (live entries of ``gw:config:acks``)."""
        now = time.time()
        return sum(1 for value in self.redis.hvals("gw:config:acks") if float(value.split()[1]) >= now)

    def idle(self, key: str) -> dict[str, Any]:
        workers = self.args.workers
        service, pids = self.gateway(workers)
        sessions = self.pg.counters()["sessions"]
        peak = PeakSampler(lambda: len(self.pg.backends()))
        with peak:
            # Every worker must have booted and served, so that it syncs and polls (30 workers
            # importing Django on a busy machine take a while).
            deadline = time.monotonic() + self.args.boot_seconds
            while time.monotonic() < deadline:
                self.wrk(key, workers * 2, 3)
                time.sleep(2)
                if self.syncing() >= workers and self.polling() >= workers:
                    break
            time.sleep(5)
        warm_sessions = self.pg.counters()["sessions"] - sessions
        seen = self.syncing()
        pollers = self.polling()
        log(f"idle: {seen} of {workers} workers sync, {pollers} poll the configuration")
        stop = threading.Event()
        filler = threading.Thread(target=self.keep_window_full, args=(stop,), daemon=True)
        filler.start()
        time.sleep(3)
        cpu, stats = self.redis_state()
        pg_pids = self.pg.backends()
        pg_cpu = backend_cpu_us(pg_pids)
        counters = self.pg.counters()
        statements = self.pg.statements() if self.statements else {}
        worker_cpu = procs.cpu_ticks(pids)
        started = time.monotonic()
        time.sleep(self.args.idle_seconds)
        seconds = time.monotonic() - started
        cpu_after, stats_after = self.redis_state()
        pg_cpu_after = backend_cpu_us(self.pg.backends())  # backends that came and went are not timed
        counters_after = self.pg.counters()
        statements_after = self.pg.statements() if self.statements else {}
        worker_cpu_after = procs.cpu_ticks(pids)
        connections = len(self.pg.backends())
        redis_clients = int(self.redis.info("clients")["connected_clients"]) - 1  # less this script's own
        stop.set()
        filler.join()
        self.stop(service)
        # A worker that never served (gunicorn's workers race for connections) neither syncs
        # nor polls: each figure is divided by the processes that do.
        process_seconds = max(seen, 1) * seconds
        poller_seconds = max(pollers, 1) * seconds
        return {
            "workers": workers,
            "syncing": seen,
            "polling": pollers,
            "seconds": round(seconds, 1),
            "fields_per_second_hash": self.window_fields,
            "redis_us_per_process_s": round((cpu_after - cpu) * 1e6 / process_seconds, 2),
            "pg_us_per_process_s": round((pg_cpu_after - pg_cpu) / poller_seconds, 2),
            "pg_xacts_per_process_min": round((counters_after["xacts"] - counters["xacts"]) * 60 / poller_seconds, 1),
            "pg_sessions_opened": counters_after["sessions"] - counters["sessions"],
            "warmup_pg_sessions_opened": warm_sessions,
            "warmup_pg_peak_connections": peak.peak,
            "pg_connections": connections,
            "pg_connections_per_process": round(connections / max(pollers, 1), 2),
            "redis_connections_per_process": round(redis_clients / workers, 2),
            "worker_cpu_us_per_s": round((worker_cpu_after - worker_cpu) * 1e6 / CLK_TCK / process_seconds, 1),
            "commands": per_unit(commandstats_delta(stats, stats_after), process_seconds),
            "queries_per_process_min": statements_per_minute(statements, statements_after, poller_seconds),
        }

    def keep_window_full(self, stop: threading.Event) -> None:
        """Keep every second of the live-latency window as full as the warm-up's busiest second.

        Under traffic every second of the window holds fields; idle processes still read
        the whole window once a second, so the idle measurement reads a full one too
        (one HSET a second from here, counted with the rest: a few microseconds).
        """
        import redis
        from django.conf import settings

        from usage.latency.live import KEY_PREFIX

        window = settings.GATEWAY["LATENCY_WINDOW_SECONDS"]
        now = int(time.time())
        fields: dict[bytes, bytes] = {}
        for second in range(now - window + 1, now + 1):
            found = self.redis.hgetall(f"{KEY_PREFIX}{second}")
            if len(found) > len(fields):
                fields = found
        self.window_fields = len(fields)
        if not fields:
            return
        for second in range(now - window + 1, now + 1):
            self.redis.hset(f"{KEY_PREFIX}{second}", mapping=fields)
            self.redis.expire(f"{KEY_PREFIX}{second}", window + 10)
        last = now
        while not stop.wait(0.2):
            now = int(time.time())
            if now != last:
                try:
                    self.redis.hset(f"{KEY_PREFIX}{now}", mapping=fields)
                    self.redis.expire(f"{KEY_PREFIX}{now}", window + 10)
                except redis.RedisError:  # the run is ending (its Redis stopped)
                    return
                last = now

    def run(self) -> dict[str, Any]:
        (self.tmp / "logs").mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {"machine": machine(), "args": {k: v for k, v in vars(self.args).items()}}
        try:
            plain, limited = self.setup()
            service, pids = self.gateway(1)
            log("load: key without limits")
            results["load"] = {"plain": self.load(plain, pids)}
            log(f"  {results['load']['plain']['rps']} req/s")
            log("load: budget + RPM/TPM key")
            results["load"]["limited"] = self.load(limited, pids)
            log(f"  {results['load']['limited']['rps']} req/s")
            self.stop(service)
            log("drain")
            results["drain"] = self.drain()
            log(f"  {results['drain']['events']} events")
            log(f"idle: {self.args.workers} workers, {self.args.idle_seconds} s")
            results["idle"] = self.idle(plain)
            max_connections, reserved = self.pg.max_connections()
            measured = Measured(
                rps_per_process=results["load"]["limited"]["rps"],
                redis_us_per_request=results["load"]["limited"]["redis_us_per_request"],
                redis_us_per_event_drained=results["drain"]["redis_us_per_event"],
                pg_us_per_event=results["drain"]["pg_us_per_event"],
                redis_idle_us_per_process_s=results["idle"]["redis_us_per_process_s"],
                pg_idle_us_per_process_s=results["idle"]["pg_us_per_process_s"],
                pg_xacts_per_process_min=results["idle"]["pg_xacts_per_process_min"],
                pg_connections_per_process=results["idle"]["pg_connections_per_process"],
                max_connections=max_connections,
                reserved_connections=reserved,
            )
            results["measured"] = vars(measured)
            results["figures"] = capacity_figures(measured)
            results["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            for service in reversed(list(self.services)):
                service.stop()
            if self.stop_postgres:
                subprocess.run(self.stop_postgres, capture_output=True)
        return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="How many gateway processes one Redis and one Postgres carry.")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CAPACITY_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gw_capacity"),
        help="a scratch database, dropped and recreated (CAPACITY_DATABASE_URL)",
    )
    parser.add_argument(
        "--private-postgres",
        action="store_true",
        help="start a private Postgres cluster (Unix socket, max_connections 300, pg_stat_statements) instead",
    )
    parser.add_argument("--redis-port", type=int, default=18093, help="the private redis-server this run starts")
    parser.add_argument("--upstream-port", type=int, default=18094, help="nginx, the fixed-response upstream")
    parser.add_argument("--gateway-port", type=int, default=18095)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of each wrk run")
    parser.add_argument("--workers", type=int, default=30, help="gunicorn workers of the idle measurement")
    parser.add_argument("--idle-seconds", type=float, default=40.0)
    parser.add_argument("--boot-seconds", type=float, default=300.0, help="at most this long to warm every worker")
    parser.add_argument("--gateway-root", default="", help="serve the gateway from another code tree (before/after)")
    parser.add_argument("--tmp", default="/tmp/gw-capacity")
    parser.add_argument("--json", default="", help="also write every figure to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Capacity(args).run()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    print(
        f"{m['date']}: {m['nproc']} CPUs ({m['cpu_model']}), load average {m['load_avg_at_start']} -> "
        f"{m['load_avg_at_end']}; wrk {args.duration:g} s at {CONNECTIONS} connections; "
        f"idle: {results['idle']['syncing']} of {args.workers} workers syncing, {results['idle']['polling']} polling, "
        f"{args.idle_seconds:g} s, "
        f"{results['idle']['fields_per_second_hash']} fields per live-latency second"
    )
    print()
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
