"""Production server settings: ``gunicorn -c gatewaysite/gunicorn.conf.py``.

One gevent worker holds thousands of connections (long-lived LLM streams) while running
the ordinary sync Django code cooperatively; see docs/benchmark.md for what one process
serves. Environment:

- ``PORT`` (8084) and ``HOST`` (0.0.0.0), or ``GUNICORN_BIND`` (e.g. ``unix:/run/gw.sock``).
- ``GUNICORN_WORKER_CLASS`` (``gatewaysite.http_server.GatewayWorker``): gunicorn's gevent
  worker serving each connection with its own HTTP/1.1 handler (``httptools``' C parser,
  the environ built directly, the response in one write; same behaviour on the wire, less
  CPU per request: gatewaysite/http_server.py). ``gevent`` runs gunicorn's own handler.
- ``WEB_CONCURRENCY``: worker processes. Default: one per CPU when ``REDIS_URL`` is set;
  one in the embedded default, whose counters live in the process.
- ``GUNICORN_WORKER_CONNECTIONS`` (10000): simultaneous clients per worker. A stream
  holds two descriptors in its worker (the client's and the upstream's); the master
  raises its open-file limit to the hard limit at start and the workers inherit it
  (``on_starting``), and warns when that limit is below what the connections need.
- ``GUNICORN_BACKLOG`` (4096): the listen queue (the kernel caps it at
  ``net.core.somaxconn``).
- ``GUNICORN_KEEPALIVE`` (75 s): idle keep-alive; above a load balancer's idle timeout.
- ``GUNICORN_GC_THRESHOLD`` (``700,10,1000000``), ``GUNICORN_GC_YOUNG_SECONDS`` (0.05),
  ``GUNICORN_GC_YOUNG_MIN_CONNECTIONS`` (500), ``GUNICORN_GC_FULL_SECONDS`` (300) and
  ``GUNICORN_GC_FULL_SHARE`` (0.005): garbage collection (see ``post_worker_init``);
  ``GUNICORN_GC_LOG``: 1 logs every full collection and every younger one of 5 ms or
  more, with its duration (the benchmark's stream phase reads them).
- ``GUNICORN_ACCESS_LOG``: 1 writes the access log to stdout (off by default: it costs
  throughput); ``GUNICORN_LOG_LEVEL`` (info).
- ``GUNICORN_LIMIT_REQUEST_LINE`` (8190 bytes), ``GUNICORN_LIMIT_REQUEST_FIELDS`` (100
  headers), ``GUNICORN_LIMIT_REQUEST_FIELD_SIZE`` (8190 bytes): malformed or oversized
  HTTP is refused by the server itself, before the application, with gunicorn's short HTML page
  (414, 431 or 400; see docs/configuration.md, "Bad input").
"""

from __future__ import annotations

import os
from typing import Any


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _default_workers() -> int:
    if not os.environ.get("REDIS_URL"):
        return 1  # embedded mode: counters and the usage writer are per process
    return max(1, os.cpu_count() or 1)


wsgi_app = "gatewaysite.wsgi:application"
bind = [os.environ.get("GUNICORN_BIND") or f"{os.environ.get('HOST', '0.0.0.0')}:{_int('PORT', 8084)}"]
workers = _int("WEB_CONCURRENCY", _default_workers())
# gatewaysite/http_server.py: gunicorn's gevent worker with its own HTTP/1.1 connection
# handler (a C parser, less work per request); "gevent" is gunicorn's own.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gatewaysite.http_server.GatewayWorker")
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", 10000)
backlog = _int("GUNICORN_BACKLOG", 4096)
keepalive = _int("GUNICORN_KEEPALIVE", 75)
# A gevent worker's timeout is its heartbeat to the master, not a request limit:
# streams run as long as the upstream sends.
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# No preload: each worker imports Django after gevent has patched the standard library.
preload_app = False

# Malformed HTTP never reaches Django: gunicorn answers it (docs/configuration.md). Set
# explicitly, to gunicorn's defaults, so the limits are visible and cannot drift.
limit_request_line = _int("GUNICORN_LIMIT_REQUEST_LINE", 8190)  # 414 above it
limit_request_fields = _int("GUNICORN_LIMIT_REQUEST_FIELDS", 100)  # 431 above it
limit_request_field_size = _int("GUNICORN_LIMIT_REQUEST_FIELD_SIZE", 8190)  # 431 above it

accesslog = "-" if _flag("GUNICORN_ACCESS_LOG") else None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# The request id is in the response; never log headers (they carry keys).
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
proc_name = "llm-gateway"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def _gc_thresholds() -> tuple[int, int, int]:
    value = os.environ.get("GUNICORN_GC_THRESHOLD", "").strip()
    if value:
        first, second, third = (int(part) for part in value.split(","))
        return first, second, third
    return 700, 10, 1_000_000


YOUNG_MIN_CONNECTIONS = 500  # GUNICORN_GC_YOUNG_MIN_CONNECTIONS


def _young_collections(interval: float, stop: Any = None, busy: Any = None) -> None:
    """Collect generations 0 and 1 every ``interval`` seconds while ``busy()`` says so (always
    without it), until ``stop`` (an Event) is set."""
    import gc
    import time

    while stop is None or not stop.is_set():
        time.sleep(interval)  # cooperative under the gevent worker
        if busy is None or busy():
            gc.collect(1)


def _many_connections(worker: Any, least: int) -> Any:
    """Whether ``worker`` serves at least ``least`` connections now (always, for a worker
    class that does not count them)."""
    if not hasattr(worker, "open_connections"):
        return None
    return lambda: worker.open_connections >= least


def next_full_collection(interval: float, share: float, cost: float) -> float:
    """Seconds to the next timed full collection: ``interval``, or longer when the last one
    cost more than ``share`` of that time (``cost``: its CPU seconds), so that full
    collections never take more than ``share`` of the worker."""
    return max(interval, cost / share) if share > 0 else interval


def _full_collections(interval: float, share: float) -> None:
    import gc
    import time

    wait = interval
    while True:
        time.sleep(wait)  # cooperative under the gevent worker
        started = time.thread_time()  # the hub's thread: nothing else runs during the collection
        gc.collect()
        wait = next_full_collection(interval, share, time.thread_time() - started)


def _raise_open_files() -> tuple[int, int]:
    """Raise the open-file limit (``RLIMIT_NOFILE``) to the hard limit; returns (soft, hard).

    Soft limits are often 1,024 while hard limits are far higher, and a worker holding
    thousands of streams needs two descriptors per stream. The hard limit itself is the
    system's (``ulimit -Hn``, systemd's ``LimitNOFILE``, a container's ``--ulimit``).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # kept as it was; the warning below says what follows
    return soft, hard


def on_starting(server: object) -> None:
    """Raise the open-file limit (inherited by the workers), and empty the metrics directory:
    counters start from zero with the server (docs/observability.md).

    Each worker writes its sums to a file there; files of exited workers are kept (and
    still counted) until the next start.
    """
    import shutil
    from pathlib import Path

    soft, _hard = _raise_open_files()
    needed = 2 * worker_connections  # a stream's client and upstream connections
    if soft < needed:
        server.log.warning(  # type: ignore[attr-defined]  # gunicorn's Arbiter
            "open-file limit %d is below the %d descriptors %d connections per worker may need "
            "(two per stream); raise the hard limit (ulimit -Hn, LimitNOFILE)",
            soft,
            needed,
            worker_connections,
        )

    var_dir = os.environ.get("GATEWAY_VAR_DIR") or str(Path(__file__).resolve().parent.parent / "var")
    directory = Path(os.environ.get("GATEWAY_METRICS_DIR") or Path(var_dir) / "metrics")
    if directory.is_dir():
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


GC_LOG_MS = 5.0  # GUNICORN_GC_LOG: shorter young collections are not logged


def _log_collections() -> None:
    """Log collections as ``gc pause: generation G, N ms, C ms CPU, K collected`` (gunicorn's
    error log), full ones with the objects they traversed. The CPU time is the collector's
    own; the wall time also counts what other processes took from this one meanwhile."""
    import contextlib
    import gc
    import logging
    import time

    logger = logging.getLogger("gunicorn.error")
    began = [0.0, 0.0]
    tracked = [0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if info["generation"] == 2:
                tracked[0] = len(gc.get_objects())  # not frozen ones: those the collection skips
            began[:] = time.perf_counter(), time.thread_time()
            return
        took = (time.perf_counter() - began[0]) * 1000
        cpu = (time.thread_time() - began[1]) * 1000
        # a collection that runs while a greenlet is being finalized: logging asks gevent for
        # the current thread, which it cannot give then (RuntimeError); that pause goes unlogged
        with contextlib.suppress(RuntimeError):
            _log_collection(logger, info, took, cpu, tracked[0])

    gc.callbacks.append(callback)


def _log_collection(logger: Any, info: dict[str, int], took: float, cpu: float, tracked: int) -> None:
    if info["generation"] == 2:
        logger.warning(
            "gc pause: generation 2, %.1f ms, %.1f ms CPU, %d collected, %d objects",
            took,
            cpu,
            info["collected"],
            tracked,
        )
    elif took >= GC_LOG_MS:
        logger.warning(
            "gc pause: generation %d, %.1f ms, %.1f ms CPU, %d collected",
            info["generation"],
            took,
            cpu,
            info["collected"],
        )


def post_worker_init(worker: object) -> None:
    """Garbage collection for a process holding thousands of streams.

    - ``gc.freeze()``: everything loaded at start (Django, the app) leaves the collector's
      sight, so collections scan only what requests allocate.
    - Full (generation 2) collections scan every live object: with 2,000 open streams one
      took 35-120 ms, stalling every stream, and Python starts one at each 25% growth of
      the heap, so several ran while streams were opening (time to first token p99
      ~150 ms). The third threshold is raised from 10 to 1,000,000
      (``GUNICORN_GC_THRESHOLD``, default ``700,10,1000000``), which stops automatic full
      collections; young garbage is collected as often as by default, and more (below).
    - Young collections on a clock: every ``GUNICORN_GC_YOUNG_SECONDS`` (0.05; 0 turns it
      off) a collection of generations 0 and 1, while the worker serves at least
      ``GUNICORN_GC_YOUNG_MIN_CONNECTIONS`` (500) connections. Python starts a young
      collection when the tracked objects *allocated* exceed those *freed* by 700; with
      thousands of open streams every relayed chunk's wait allocates a few objects that
      live its 2 s (a loop timer, a waiter, their bound methods and arguments) while those
      of two seconds ago are freed, so the count barely moves, the young generations grow
      to 10,000-50,000 objects between collections, and each collection stalled every
      stream for 5-36 ms (8,000 streams: added TTFT p99 70-110 ms, the slow starts falling
      on those pauses). Collected on a clock, the young generations hold 50 ms of
      allocations (a pause of about a millisecond), and an object that outlives them is
      traversed once on its way to the old generation instead of twice. With few
      connections (16 busy ones, say) the clock waits: the requests' objects die by their
      reference count, so Python's own count rarely starts a collection, while one every
      50 ms would traverse every in-flight request's objects each time (1.4% of the
      worker's CPU at 16 connections, in a profile). With 20 collections of generation 1 a
      second, a third threshold of 1000 would start an automatic full collection every
      50 s (Python starts one when the objects moved to the old generation since the last
      exceed a quarter of it, as they do while thousands of streams come and go): hence
      1,000,000.
    - Reference cycles that outlive a request then accumulate until a full collection, so
      one runs on a timer instead: every ``GUNICORN_GC_FULL_SECONDS`` (300; 0 turns it
      off), which bounds that garbage to 5 minutes' worth. The API's requests leave none
      (their DRF view breaks the view/request cycle, routing/views/completions.py; 0 objects
      a completion or a stream, counted with ``gc.DEBUG_SAVEALL``), and with 8,000 open
      streams a timed full collection took 0.5 s and collected nothing; what remains are
      the admin's and the error paths' cycles, so the timer was lengthened from 30 s.
    - A full collection's cost grows with the live objects: with 8,000 open streams
      (1.2 million objects) one took 0.8 s of CPU, and every stream waited meanwhile.
      So the timer also keeps full collections under ``GUNICORN_GC_FULL_SHARE`` (0.005)
      of the worker's time: after one that took C seconds of CPU the next comes after
      ``max(GUNICORN_GC_FULL_SECONDS, C / share)``, so a pause reaches at most about that
      share of the streams starting. Garbage is kept longer in exchange, only when the heap
      is large (a small heap collects in milliseconds and keeps the interval).
    Measured in docs/benchmark.md.

    Also: gunicorn's per-request work without repeated costs (``gatewaysite/gunicorn_worker.py``).
    """
    import gc
    import threading

    from gatewaysite.gunicorn_worker import install

    install(worker)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_gc_thresholds())
    if _flag("GUNICORN_GC_LOG"):
        _log_collections()
    interval = float(os.environ.get("GUNICORN_GC_FULL_SECONDS", "300") or 0)
    share = float(os.environ.get("GUNICORN_GC_FULL_SHARE", "0.005") or 0)
    if interval > 0:
        threading.Thread(target=_full_collections, args=(interval, share), name="gc-full", daemon=True).start()
    young = float(os.environ.get("GUNICORN_GC_YOUNG_SECONDS", "0.05") or 0)
    if young > 0:
        least = int(os.environ.get("GUNICORN_GC_YOUNG_MIN_CONNECTIONS", str(YOUNG_MIN_CONNECTIONS)))
        busy = _many_connections(worker, least)
        threading.Thread(target=_young_collections, args=(young, None, busy), name="gc-young", daemon=True).start()
