"""``short_lock`` (gatewaysite/locks.py) under gevent, as in a served worker: the C lock, not
gevent's; and the sections that take it (the process's metrics, its in-flight counts) stay
exact and never block a greenlet, with greenlets and native threads of gevent's pool at
them at once. A section that switched greenlets while holding the lock would hang here.

A process of its own, gevent-patched before anything else is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.procs import ROOT, gateway_env

SCRIPT = """
from gevent import monkey

monkey.patch_all()

import json
import threading

import django

django.setup()

import gevent
from gevent.threadpool import ThreadPool

from gatewaysite.locks import short_lock
from monitoring.recording import ProcessMetrics
from routing.inflight import InFlight

metrics = ProcessMetrics()
metrics._thread_started = True  # no snapshot file: the counts are read here
flight = InFlight()
ROUNDS = 2000


def work(name):
    for _ in range(ROUNDS):
        flight.acquire(name)
        metrics.http("/v1/chat/completions", "POST", 200, 0.001)
        flight.release(name)


pool = ThreadPool(2)
with gevent.Timeout(60):
    jobs = [gevent.spawn(work, "a") for _ in range(20)] + [pool.spawn(work, "a") for _ in range(2)]
    gevent.joinall([j for j in jobs if isinstance(j, gevent.Greenlet)])
    for job in jobs:
        job.get()
total = sum(metrics._http.values())
print(json.dumps({
    "gevents_lock": type(threading.Lock()).__module__,
    "short_lock": type(short_lock()).__module__,
    "metrics_lock": type(metrics._lock).__module__,
    "in_flight_lock": type(flight._lock).__module__,
    "requests": total,
    "left_in_flight": flight.counts().get("a", (0, 0))[0],
}))
"""


def test_the_request_paths_short_locks_hold_between_greenlets_and_native_threads(tmp_path: Path) -> None:
    env = gateway_env(var_dir=tmp_path / "var")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["gevents_lock"].startswith("gevent")  # patched: threading.Lock is gevent's
    assert not result["short_lock"].startswith("gevent")  # the interpreter's own lock
    assert result["metrics_lock"] == result["in_flight_lock"] == result["short_lock"]
    assert result["requests"] == 22 * 2000  # not one count lost between threads
    assert result["left_in_flight"] == 0
