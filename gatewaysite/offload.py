"""Run CPU-heavy work off the gevent hub, so one large request does not stall the others.

Under gunicorn's gevent worker every request of a process shares one OS thread: a
greenlet that computes for a second (tokenizing a 4 MB prompt) holds every other request
of the process for that second. ``offload_cpu`` runs such work on a gevent pool of native
threads (``gevent.threadpool.ThreadPool``) and parks the calling greenlet until it is done;
meanwhile the hub keeps serving. It helps when the work releases the interpreter lock
(tiktoken encodes in Rust without it) or is pure Python (the interpreter hands the lock
back to the hub every ``sys.getswitchinterval()``, 5 ms); one C call that holds the lock
throughout gains nothing. Measured in docs/benchmark.md ("Large bodies").

Outside a monkey-patched gevent process (the test server, management commands) the work
simply runs in the calling thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def gevent_patched() -> bool:
    """Whether this process serves under gevent (gunicorn's gevent worker patches ``threading``)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return bool(monkey.is_module_patched("threading"))


_pool: Any = None
_pool_lock = threading.Lock()


def _cpu_pool() -> Any:
    """The process's pool of native threads for CPU work (``GATEWAY_CPU_THREADS``, 1).

    Its own pool, not the hub's (which also resolves host names). One thread by default:
    CPU work gains nothing from more threads than cores, and every extra thread is one
    more contender for the interpreter lock the hub needs to serve the other requests
    (with four, the hub waited up to hundreds of milliseconds for it on a loaded machine).
    Parallelism across cores comes from the worker processes (``WEB_CONCURRENCY``).
    """
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                from django.conf import settings
                from gevent.threadpool import ThreadPool

                _pool = ThreadPool(settings.GATEWAY["CPU_THREADS"])
    return _pool


def offload_cpu(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a native thread when serving under gevent, else in this thread.

    ``fn`` must not touch the database or anything bound to the request's thread: it
    runs on a thread of its own. Its exceptions reach the caller.
    """
    if not gevent_patched():
        return fn(*args)
    return _cpu_pool().apply(fn, args)
