"""In-flight upstream attempts per deployment, across every gateway process (``least-busy``).

The request path never waits on Redis for it: ``acquire``/``release`` change this
process's counts in memory. The live-latency sync (usage/latency/live.py), once a
second and in the round trip it makes anyway, writes this process's counts to the hash
``gw:busy:{epoch_second}`` (one field per process, EXPIRE a few seconds) and reads the
last seconds back; the newest report of each other process counts. So

    in flight(deployment) = this process's exact count + every other process's count
                            as of its last report (at most about two seconds old).

A process reads the others' reports at once the first time it ranks (one round trip,
once); after that only in the background sync. A process that dies stops reporting and drops out within ``STALE_SECONDS``. The staleness
suits what ``least-busy`` is for, long streams: a deployment's count moves as streams
start and end over seconds to minutes, and within one process the count is exact, so
a burst arriving at one process is never piled onto one deployment.

Without Redis (embedded default) the counts are this process's alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import weakref
from typing import Any

import orjson

from gatewaysite.locks import short_lock
from usage.latency.live import live_latency

KEY_PREFIX = "gw:busy:"
STALE_SECONDS = 3  # seconds of reports read back; older ones are ignored (a dead process)


def _process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class InFlight:
    def __init__(self) -> None:
        self._lock = short_lock()
        self._local: dict[str, int] = {}
        self._others: dict[str, int] = {}  # summed counts of the other processes, as last read
        self._absorbed = False  # read the others' reports at least once
        self._process = _process_id()
        this = weakref.ref(self)

        def after_fork_in_child() -> None:
            me = this()
            if me is not None:
                me._after_fork()

        os.register_at_fork(after_in_child=after_fork_in_child)

    # --- the request path ------------------------------------------------------------

    def acquire(self, deployment: str) -> None:
        with self._lock:
            self._local[deployment] = self._local.get(deployment, 0) + 1

        live_latency._ensure_sync()  # the sync thread carries the counts to the other processes

    def release(self, deployment: str) -> None:
        with self._lock:
            count = self._local.get(deployment, 0) - 1
            if count > 0:
                self._local[deployment] = count
            else:
                self._local.pop(deployment, None)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Deployment -> (in flight in this process, in flight in the other processes).

        A process's first call reads the others' reports at once (one round trip, once):
        a worker that has not served anything yet must not think every deployment idle.
        """
        if not self._absorbed:
            self._absorbed = True
            with contextlib.suppress(Exception):  # Redis down: this process's own counts still rank
                live_latency.sync_now()
        with self._lock:
            names = set(self._local) | set(self._others)
            return {name: (self._local.get(name, 0), self._others.get(name, 0)) for name in names}

    # --- sharing (called by the live-latency sync, inside its pipeline) ---------------

    def contribute(self, pipe: Any, now_second: int) -> int:
        """Queue this process's report and the reads of the last seconds; returns the number of commands."""
        with self._lock:
            report = orjson.dumps(self._local)
        key = f"{KEY_PREFIX}{now_second}"
        pipe.hset(key, self._process, report)
        pipe.expire(key, STALE_SECONDS + 2)
        for second in range(now_second - STALE_SECONDS + 1, now_second + 1):
            pipe.hgetall(f"{KEY_PREFIX}{second}")
        return 2 + STALE_SECONDS

    def absorb(self, replies: list[Any], now_second: int) -> None:
        newest: dict[str, dict[str, int]] = {}
        for fields in replies[2:]:  # oldest second first: later reports overwrite earlier ones
            for raw_process, raw_report in fields.items():
                process = raw_process.decode() if isinstance(raw_process, bytes) else raw_process
                if process == self._process:
                    continue
                try:
                    report = orjson.loads(raw_report)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(report, dict):
                    newest[process] = report
        others: dict[str, int] = {}
        for report in newest.values():
            for deployment, count in report.items():
                if isinstance(count, int) and count > 0:
                    others[deployment] = others.get(deployment, 0) + count
        with self._lock:
            self._others = others
            self._absorbed = True

    def _after_fork(self) -> None:
        self._lock = short_lock()
        self._local, self._others = {}, {}
        self._absorbed = False
        self._process = _process_id()

    def reset(self) -> None:
        with self._lock:
            self._local, self._others = {}, {}


in_flight = InFlight()
live_latency.carry(in_flight)  # its counts ride in the live-latency sync's round trip
