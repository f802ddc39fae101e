"""Production server settings: ``gunicorn -c gatewaysite/gunicorn.conf.py``.

One gevent worker holds thousands of connections (long-lived LLM streams) while running
the ordinary sync Django code cooperatively; see docs/benchmark.md for what one process
serves. Environment:

- ``PORT`` (8084) and ``HOST`` (0.0.0.0), or ``GUNICORN_BIND`` (e.g. ``unix:/run/gw.sock``).
- ``WEB_CONCURRENCY``: worker processes. Default: one per CPU when ``REDIS_URL`` is set;
  one in the embedded default, whose counters live in the process.
- ``GUNICORN_WORKER_CONNECTIONS`` (10000): simultaneous clients per worker.
- ``GUNICORN_KEEPALIVE`` (75 s): idle keep-alive; above a load balancer's idle timeout.
- ``GUNICORN_ACCESS_LOG``: 1 writes the access log to stdout (off by default: it costs
  throughput); ``GUNICORN_LOG_LEVEL`` (info).
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

accesslog = "-" if _flag("GUNICORN_ACCESS_LOG") else None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# The request id is in the response; never log headers (they carry keys).
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
proc_name = "llm-gateway"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_worker_init(worker: object) -> None:
    """Move everything loaded at start (Django, the app) out of the garbage collector's
    sight: collections then scan only what requests allocate, and pages shared with the
    master are not dirtied by the collector's bookkeeping."""
    import gc

    gc.collect()
    gc.freeze()
