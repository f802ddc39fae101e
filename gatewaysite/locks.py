"""Locks for the request path's short critical sections."""

from __future__ import annotations

import _thread
from typing import Any


def short_lock() -> Any:
    """A lock for a section that never waits inside: dict and counter updates only (no I/O,
    no sleep, no thread start, no logging, no call that could take another lock).

    Under gevent's monkey-patching ``threading.Lock()`` is gevent's lock, written in Python:
    each acquire runs about twenty bytecodes and gevent's ``get_ident``, and a completion
    takes four such locks (its metrics and its in-flight count). This is the interpreter's
    own lock, taken in C. A section that cannot wait cannot switch greenlets, so greenlets
    never find it held; native threads (gevent's thread pool) are serialised by it as by any
    lock. A section that could wait keeps ``threading.Lock``: a greenlet that switched while
    holding this one would block its whole thread at the next greenlet's acquire.
    """
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return _thread.allocate_lock()
    return monkey.get_original("_thread", "allocate_lock")()
