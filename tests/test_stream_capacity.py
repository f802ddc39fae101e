"""One gunicorn worker holds well over a thousand streams open together.

The real production server (``gatewaysite/gunicorn.conf.py``, one gevent worker) between
the benchmark's paced streaming upstream and its raw-socket stream client. The upstream
holds every stream before its first byte until all of them wait at once (``--gate``), so
the streams can only complete if the worker holds them together: with gevent's
``worker_connections`` default (1,000) or a soft open-file limit of 1,024 (each stream
holds two descriptors in the worker) the gate never opens and the streams get a 503.
The gateway is started with a soft limit of 1,024 on purpose: the server configuration
raises it to the hard limit itself, and the worker is cold: its key cache loads once
for the 1,200 requests that arrive together, not once per request. And a worker holding that many streams spaces its
timed full garbage collections by what they cost.
"""

from __future__ import annotations

import resource
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.report import STREAM_MARKER, parse_marked_json
from tests.procs import ROOT, free_port, start_gateway, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

STREAMS = 1200
MODEL = "bench-stream"


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


def test_one_worker_holds_1200_streams_open_together(
    tmp_path: Path, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3 * STREAMS:
        pytest.skip(f"the hard open-file limit ({hard}) is too low for {STREAMS} streams")
    port = free_port()
    upstream_log = tmp_path / "upstream.log"
    with upstream_log.open("wb") as out:
        upstream = subprocess.Popen(
            [sys.executable, "-m", "bench.stream_upstream", "--port", str(port)]
            + ["--chunks", "3", "--interval", "0.2", "--gate", str(STREAMS), "--gate-timeout", "20"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    provider = make_provider("streams", base_url=f"http://127.0.0.1:{port}/v1", vendor="openai")
    make_deployment(provider, MODEL)
    make_price("openai", MODEL, "0.15", "0.60")
    _, secret = issue_key()
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by gunicorn, which must raise it
    try:
        gateway = start_gateway(tmp_path, workers=1, access_log=None)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        gateway.wait_healthy()
        wait_until(lambda: "stream upstream on" in upstream_log.read_text(), 30, "the stream upstream")
        (worker,) = gateway.worker_pids()
        assert _soft_limit(worker) == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
        done = subprocess.run(
            [sys.executable, "-m", "bench.stream_client", "--url", gateway.url + "/v1/chat/completions"]
            + ["--streams", str(STREAMS), "--ramp", "1", "--key", secret, "--model", MODEL, "--timeout", "90"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        summary = parse_marked_json(done.stdout, STREAM_MARKER)
        assert summary["ok"] == STREAMS, (summary["error_kinds"], gateway.log()[-2000:])
        # 3 content chunks, the finish chunk and [DONE] (the usage chunk is kept from a client that did not ask)
        assert summary["events_min"] == 5
        assert f"gate open: {STREAMS} streams waiting together" in upstream_log.read_text()
    finally:
        gateway.stop()
        upstream.terminate()
        upstream.wait(10)


def test_timed_full_collections_are_spaced_by_their_cost() -> None:
    """A full collection of a large heap stalls every stream: the next one waits until it
    is at most ``share`` of the time (gatewaysite/gunicorn.conf.py, ``post_worker_init``)."""
    namespace = runpy.run_path(str(ROOT / "gatewaysite" / "gunicorn.conf.py"))
    spacing = namespace["next_full_collection"]
    assert spacing(30.0, 0.005, 0.02) == 30.0  # a small heap: the interval
    assert spacing(30.0, 0.005, 0.8) == pytest.approx(160.0)  # 8,000 streams: 0.8 s of CPU
    assert spacing(30.0, 0.0, 0.8) == 30.0  # share 0: the interval alone


def _largest_young_generation(seconds: float) -> int:
    """Objects that each live a while, freed as fast as new ones come (what open streams'
    waits do): the largest generation 0 seen meanwhile."""
    import collections
    import gc
    import time

    alive: collections.deque[dict[str, list[int]]] = collections.deque(maxlen=5_000)
    largest = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(100):
            alive.append({"wait": [1]})  # two tracked objects; the oldest pair is freed
        largest = max(largest, len(gc.get_objects(generation=0)))
        time.sleep(0.001)
    return largest


def test_young_collections_on_a_clock_keep_the_young_generation_small() -> None:
    """Python starts a young collection when tracked allocations exceed frees by 700: when
    they balance (thousands of streams, each wait's objects living seconds) the young
    generation grows to tens of thousands of objects and each collection stalls every
    stream. Collected on a clock (gatewaysite/gunicorn.conf.py), it holds one period's."""
    namespace = runpy.run_path(str(ROOT / "gatewaysite" / "gunicorn.conf.py"))
    assert namespace["_gc_thresholds"]() == (700, 10, 1_000_000)
    without = _largest_young_generation(1.0)
    with_clock = _largest_with_clock(namespace["_young_collections"], None)
    assert without > 9_000, (without, with_clock)  # the pattern grows it to every live object without the clock
    assert with_clock < 6_000, (without, with_clock)
    waiting = _largest_with_clock(namespace["_young_collections"], lambda: False)  # few connections: the clock waits
    assert waiting > 9_000, waiting


def _largest_with_clock(young_collections: Any, busy: Any) -> int:
    """``_largest_young_generation`` while the clock runs every 10 ms beside it."""
    import threading

    stop = threading.Event()
    clock = threading.Thread(target=young_collections, args=(0.01, stop, busy), daemon=True)
    clock.start()
    try:
        return _largest_young_generation(1.0)
    finally:
        stop.set()
        clock.join(5)


def test_the_worker_counts_the_connections_it_serves() -> None:
    """What the young-collection clock reads (``GatewayWorker.open_connections``)."""
    import socket

    from gatewaysite.http_server import GatewayWorker

    namespace = runpy.run_path(str(ROOT / "gatewaysite" / "gunicorn.conf.py"))
    worker = object.__new__(GatewayWorker)
    busy = namespace["_many_connections"](worker, 2)
    seen: list[tuple[int, bool]] = []

    def serve(listener: object, client: object, addr: object) -> None:
        seen.append((worker.open_connections, busy()))
        if len(seen) == 1:
            inner, other = socket.socketpair()
            other.close()
            worker.handle(None, inner, ("127.0.0.1", 1))  # a second connection while the first is served

    worker.serve = serve  # type: ignore[method-assign]
    first, other = socket.socketpair()
    other.close()
    worker.handle(None, first, ("127.0.0.1", 1))
    assert seen == [(1, False), (2, True)]
    assert worker.open_connections == 0 and not busy()
    assert namespace["_many_connections"](object(), 2) is None  # a worker class that does not count: always
