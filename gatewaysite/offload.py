"""Run CPU-heavy work off the gevent hub, so one large request does not stall the others.

Under gunicorn's gevent worker every request of a process shares one OS thread: a
greenlet that computes for a second (tokenizing a 4 MB prompt) holds every other request
of the process for that second. ``offload_cpu`` runs such work on gevent's pool of native
threads (``gevent.get_hub().threadpool``) and parks the calling greenlet until it is done;
meanwhile the hub keeps serving. It helps when the work releases the interpreter lock
(tiktoken encodes in Rust without it) or is pure Python (the interpreter hands the lock
back to the hub every ``sys.getswitchinterval()``, 5 ms); one C call that holds the lock
throughout gains nothing. Measured in docs/benchmark.md ("Large bodies").

Outside a monkey-patched gevent process (the test server, management commands) the work
simply runs in the calling thread.
"""

from __future__ import annotations

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


def offload_cpu(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a native thread when serving under gevent, else in this thread.

    ``fn`` must not touch the database or anything bound to the request's thread: it
    runs on a thread of its own. Its exceptions reach the caller.
    """
    if not gevent_patched():
        return fn(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(fn, args)
