"""Read-your-writes for operators: a configuration write returns once every process serves it.

Each process that serves requests acknowledges the configuration version it serves in
the Redis hash ``gw:config:acks`` (field: process id, value: ``"<version> <expires>"``),
from its config poller: after every poll, so the entry is also a heartbeat. An entry
whose ``expires`` (unix time) has passed belongs to a process that died or hung: it
drops out of the live set (and is deleted a minute later).

A writer (the strategy API, an admin save, ``gateway_config import``, ``pricing
import``) commits, which publishes the new version on ``gw:config:changed:<db>`` (every
poller waits on that channel between polls, so it reloads at once instead of at its next
poll), then calls ``wait_for_propagation()``: it waits, at most
``GATEWAY_CONFIG_PROPAGATION_SECONDS`` (2 s), until every live process acknowledged
that version, and says which did not. Without Redis (the embedded default: one
process) the writer's own process is the only one, so it is immediate.

Cost: per process one idle pub/sub connection and one HSET per poll (0.5 s); per write,
a PUBLISH and a few HGETALLs while it waits (measured in docs/architecture.md).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from gatewaysite.config.notice import propagation_seconds, read_version
from gatewaysite.redis_client import get_redis

logger = logging.getLogger(__name__)

ACKS = "gw:config:acks"
FORGET_AFTER = 60.0  # seconds past expiry after which a dead process's entry is deleted
WAIT_STEP = 0.01

_before_wait: list[Callable[[], None]] = []
_local = threading.local()  # per thread (per greenlet under gevent): versions this request committed
_process: tuple[int, str] | None = None


def process_id() -> str:
    """Host, pid and a random part (a pid can be reused); recomputed after a fork."""
    global _process
    pid = os.getpid()
    if _process is None or _process[0] != pid:
        _process = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:6]}")
    return _process[1]


def channel() -> str:
    """Pub/sub channels are shared by every database of a Redis server: name ours by database."""
    client = get_redis()
    db = client.connection_pool.connection_kwargs.get("db", 0) if client is not None else 0
    return f"gw:config:changed:{db}"


def ack_ttl() -> float:
    return max(5.0, 10 * float(settings.GATEWAY["CONFIG_POLL_SECONDS"] or 0.5))


# --- the processes' side -------------------------------------------------------------------


def acknowledge(version: int) -> None:
    """Record (and heartbeat) that this process serves ``version``. Never raises."""
    client = get_redis()
    if client is None:
        return
    try:
        client.hset(ACKS, process_id(), f"{version} {time.time() + ack_ttl():.3f}")
    except Exception:  # Redis down: writers will report this process as not acknowledging
        logger.debug("could not acknowledge config version %s", version, exc_info=True)


def _forget_self() -> None:
    client = get_redis()
    if client is not None and _process is not None and _process[0] == os.getpid():
        try:
            client.hdel(ACKS, _process[1])
        except Exception:
            logger.debug("could not remove this process's acknowledgement", exc_info=True)


class ChangeSignal:
    """The poller's pause between polls: returns early when a writer announces a new version."""

    def __init__(self) -> None:
        self._pubsub: Any = None
        self._retry_at = 0.0
        atexit.register(_forget_self)

    def _subscribe(self) -> Any:
        client = get_redis()
        if client is None or time.monotonic() < self._retry_at:
            return None
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel())
            return pubsub
        except Exception:
            self._retry_at = time.monotonic() + 5.0
            logger.debug("config change channel unavailable; polling only", exc_info=True)
            return None

    def wait(self, timeout: float) -> None:
        if self._pubsub is None:
            self._pubsub = self._subscribe()
        if self._pubsub is None:
            time.sleep(timeout)
            return
        deadline = time.monotonic() + timeout
        try:
            # One message is enough; drain the burst a bulk write may have sent.
            message = self._pubsub.get_message(timeout=timeout)
            while message is not None and time.monotonic() < deadline:
                message = self._pubsub.get_message(timeout=0)
        except Exception:
            logger.debug("config change channel failed; polling only", exc_info=True)
            try:
                self._pubsub.close()
            except Exception:
                logger.debug("closing the config change channel failed", exc_info=True)
            self._pubsub = None
            self._retry_at = time.monotonic() + 5.0
            time.sleep(max(0.0, deadline - time.monotonic()))


# --- the writers' side ---------------------------------------------------------------------


def before_wait(hook: Callable[[], None]) -> None:
    """Run ``hook`` before a writer waits: this process's own configuration cache serves the
    write first and acknowledges it (registered by the app that keeps that cache)."""
    if hook not in _before_wait:
        _before_wait.append(hook)


def _committed() -> None:
    version = read_version()
    _local.pending = max(getattr(_local, "pending", 0), version)
    client = get_redis()
    if client is None:
        return
    try:
        client.publish(channel(), str(version))
    except Exception:  # the pollers still see it on their next poll
        logger.warning("could not announce config version %s", version, exc_info=True)


def announce_on_commit() -> None:
    """Called by every configuration write: once its transaction commits, announce the new version."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(item[1] is _committed for item in connection.run_on_commit):
        return  # already registered for this transaction
    transaction.on_commit(_committed)


def take_pending() -> int | None:
    """The newest version this thread committed since the last call (and forget it)."""
    pending = getattr(_local, "pending", 0)
    _local.pending = 0
    return pending or None


@dataclass
class Propagation:
    """Whether every live process serves ``version`` (or a newer one)."""

    version: int
    complete: bool
    processes: int = 0  # live processes seen (0 without Redis: this process only)
    lagging: list[str] = field(default_factory=list)  # process ids that had not acknowledged in time
    waited_ms: float = 0.0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "complete": self.complete,
            "processes": self.processes,
            "lagging": self.lagging,
            "waited_ms": round(self.waited_ms, 1),
            **({"error": self.error} if self.error else {}),
        }

    def message(self) -> str:
        if self.complete:
            served = f"all {self.processes} gateway processes" if self.processes else "this process"
            return f"Configuration version {self.version} is served by {served}."
        if self.error:
            return f"Configuration version {self.version} saved, but it could not be checked that every process serves it: {self.error}."
        return (
            f"Configuration version {self.version} saved, but {len(self.lagging)} of {self.processes} gateway "
            f"processes had not acknowledged it after {self.waited_ms / 1000:.1f} s ({', '.join(self.lagging)}); "
            "they keep serving the previous configuration until they catch up."
        )


def _live_versions(client: Any, now: float) -> dict[str, int]:
    live: dict[str, int] = {}
    dead: list[Any] = []
    for name, value in client.hgetall(ACKS).items():
        try:
            text, expires = value.decode().split()
            version, expiry = int(text), float(expires)
        except (ValueError, AttributeError):
            dead.append(name)
            continue
        if expiry >= now:
            live[name.decode() if isinstance(name, bytes) else str(name)] = version
        elif expiry < now - FORGET_AFTER:
            dead.append(name)
    if dead:
        client.hdel(ACKS, *dead)
    return live


def wait_for_propagation(version: int | None = None, *, timeout: float | None = None) -> Propagation | None:
    """Wait until every live process serves ``version`` (default: what this thread just committed).

    None when there is nothing to wait for (this thread committed no configuration change).
    """
    version = version if version is not None else take_pending()
    if not version:
        return None
    for hook in _before_wait:  # this process first: it also acknowledges when it polls
        hook()
    client = get_redis()
    if client is None:
        return Propagation(version=version, complete=True)
    limit = propagation_seconds() if timeout is None else timeout
    started = time.monotonic()
    lagging: list[str] = []
    live: dict[str, int] = {}
    try:
        while True:
            live = _live_versions(client, time.time())
            lagging = sorted(name for name, served in live.items() if served < version)
            if not lagging or time.monotonic() - started >= limit:
                break
            time.sleep(WAIT_STEP)
    except Exception as exc:
        logger.warning("could not check that config version %s reached every process", version, exc_info=True)
        return Propagation(
            version=version, complete=False, waited_ms=(time.monotonic() - started) * 1000, error=str(exc)
        )
    waited = (time.monotonic() - started) * 1000
    if lagging:
        logger.warning("config version %s not acknowledged after %.0f ms by %s", version, waited, lagging)
    return Propagation(version=version, complete=not lagging, processes=len(live), lagging=lagging, waited_ms=waited)
