"""Production server settings: ``gunicorn -c gatewaysite/gunicorn.conf.py``.

One gevent worker holds thousands of connections (long-lived LLM streams) while running
the ordinary sync Django code cooperatively; see docs/benchmark.md for what one process
serves. Environment:

- ``PORT`` (8084) and ``HOST`` (0.0.0.0), or ``GUNICORN_BIND`` (e.g. ``unix:/run/gw.sock``).
- ``WEB_CONCURRENCY``: worker processes. Default: one per CPU when ``REDIS_URL`` is set;
  one in the embedded default, whose counters live in the process.
- ``GUNICORN_WORKER_CONNECTIONS`` (10000): simultaneous clients per worker.
- ``GUNICORN_KEEPALIVE`` (75 s): idle keep-alive; above a load balancer's idle timeout.
- ``GUNICORN_GC_THRESHOLD`` (``700,10,1000``) and ``GUNICORN_GC_FULL_SECONDS`` (30):
  garbage collection (see ``post_worker_init``).
- ``GUNICORN_ACCESS_LOG``: 1 writes the access log to stdout (off by default: it costs
  throughput); ``GUNICORN_LOG_LEVEL`` (info).
- ``GUNICORN_LIMIT_REQUEST_LINE`` (8190 bytes), ``GUNICORN_LIMIT_REQUEST_FIELDS`` (100
  headers), ``GUNICORN_LIMIT_REQUEST_FIELD_SIZE`` (8190 bytes): malformed or oversized
  HTTP is refused by gunicorn itself, before the application, with a short HTML page
  (414, 431 or 400; see docs/configuration.md, "Bad input").
"""

from __future__ import annotations

import os


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
worker_class = "gevent"
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
    return 700, 10, 1000


def _full_collections(interval: float) -> None:
    import gc
    import time

    while True:
        time.sleep(interval)  # cooperative under the gevent worker
        gc.collect()


def on_starting(server: object) -> None:
    """Empty the metrics directory: counters start from zero with the server (docs/observability.md).

    Each worker writes its sums to a file there; files of exited workers are kept (and
    still counted) until the next start.
    """
    import shutil
    from pathlib import Path

    var_dir = os.environ.get("GATEWAY_VAR_DIR") or str(Path(__file__).resolve().parent.parent / "var")
    directory = Path(os.environ.get("GATEWAY_METRICS_DIR") or Path(var_dir) / "metrics")
    if directory.is_dir():
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def post_worker_init(worker: object) -> None:
    """Garbage collection for a process holding thousands of streams.

    - ``gc.freeze()``: everything loaded at start (Django, the app) leaves the collector's
      sight, so collections scan only what requests allocate.
    - Full (generation 2) collections scan every live object: with 2,000 open streams one
      took 35-120 ms, stalling every stream, and Python starts one at each 25% growth of
      the heap, so several ran while streams were opening (time to first token p99
      ~150 ms). The third threshold is raised from 10 to 1000
      (``GUNICORN_GC_THRESHOLD``, default ``700,10,1000``), which all but stops automatic
      full collections; young garbage is collected as often as by default.
    - Reference cycles that outlive a request (DRF's view and request point at each
      other) then accumulate until a full collection, so one runs on a timer instead:
      every ``GUNICORN_GC_FULL_SECONDS`` (30; 0 turns it off), which bounds the garbage
      to 30 seconds' worth and the pauses to one per 30 seconds.
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
    interval = float(os.environ.get("GUNICORN_GC_FULL_SECONDS", "30") or 0)
    if interval > 0:
        threading.Thread(target=_full_collections, args=(interval,), name="gc-full", daemon=True).start()
