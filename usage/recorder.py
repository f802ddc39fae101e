"""Recording usage events from the request path: one fast step, never lost.

Group commit: a request hands its event to the process's single writer and waits until
the event is durable. The writer takes everything queued, writes it in one round trip,
and wakes the waiters; while it writes, new events queue up for the next batch. Batches
grow with load, so one round trip serves many requests (docs/architecture.md).

- ``RedisStreamRecorder`` (``REDIS_URL`` set): one atomic script call per batch, an XADD
  to the usage stream per event plus the counter increments (spend, budgets), applied
  exactly once per batch (usage/redis_batch.py). Celery workers move the stream into
  Postgres (usage/consumer.py). If Redis fails, the batch is spooled to local disk with
  its counter increments (usage/spool.py) and replayed into Redis (stream *and* counters,
  once per batch) as soon as Redis answers again: the counters are never left short
  of the spend, and the record takes the usual path to Postgres. The answer then carries
  no key spend (unknown for the moment), never a zero.
- ``DatabaseRecorder`` (embedded default): the batch is inserted into the database
  directly and latency rollups are refreshed in process; counters live in process. If
  the database fails, the batch is spooled and inserted by the next successful write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from django.conf import settings
from django.db import connection

from gatewaysite.offload import gevent_patched
from gatewaysite.redis_client import get_redis
from usage.events import PendingEvent, decode_payload
from usage.ingest import ingest_events
from usage.latency.rollup import refresh_buckets
from usage.redis_batch import BatchConnection
from usage.spool import spool_replay, spool_write

logger = logging.getLogger(__name__)

E = TypeVar("E")
R = TypeVar("R")


class _Done(Protocol):
    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class _Slot(Generic[E, R]):
    __slots__ = ("event", "done", "result", "error")

    def __init__(self, event: E, done: _Done) -> None:
        self.event = event
        self.done = done
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommitWriter(Generic[E, R]):
    """One writer thread per process; ``submit`` blocks until the event's batch is written.

    ``flush`` writes a batch of events (``E``) and returns one result (``R``) per event.
    ``idle`` (optional) is called by the writer thread when no event came for
    ``IDLE_SECONDS`` and ``idle_wanted()`` says there is work to do without one (the Redis
    recorder replays its spool once Redis is back, even if no request comes after).

    Under gevent (the served processes) the writer is a greenlet and the hand-off uses
    gevent's own events: a waiter's event and the writer's wake-up are one compiled call
    each, where ``threading.Event`` and ``Condition`` (patched) are pure Python over gevent
    locks and allocate a lock per wait; every request waits twice (admission, recording).
    Greenlets switch only where they block, so the queue needs no lock there. Elsewhere
    (threads: tests, ``runserver``, Celery) the queue is guarded by a ``Condition``.
    """

    IDLE_SECONDS = 1.0
    GATHER_SECONDS = 0.002  # under gevent: the longest a batch waits for the process's idle moment (_gather)

    def __init__(
        self,
        flush: Callable[[list[E]], list[R]],
        name: str,
        idle: Callable[[], None] | None = None,
        idle_wanted: Callable[[], bool] | None = None,
    ) -> None:
        self._flush = flush
        self._name = name
        self._idle = idle
        self._idle_wanted = idle_wanted
        self._queue: list[_Slot[E, R]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._greenlets = False  # set when the writer starts: gevent_patched()
        self._wake: Any = None  # under gevent: the writer's wake-up (gevent.event.Event)
        self._new_done: Callable[[], Any] = threading.Event
        this = weakref.ref(self)
        # A forked child has no writer thread: start a new one there on first use. Checked at
        # fork time rather than with getpid()/is_alive() on every request (measured in
        # docs/benchmark.md). The thread itself never exits: each batch's errors go to its waiters.

        def after_fork_in_child() -> None:
            writer = this()
            if writer is not None:
                writer._after_fork()

        os.register_at_fork(after_in_child=after_fork_in_child)

    def _after_fork(self) -> None:
        self._queue = []
        self._cond = threading.Condition()
        self._thread = None
        self._greenlets = False
        self._wake = None
        self._new_done = threading.Event

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._cond:
                if self._thread is None:
                    if gevent_patched():
                        from gevent.event import Event

                        self._greenlets = True
                        self._wake = Event()
                        self._new_done = Event
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()

    def submit(self, event: E) -> R:
        # No per-request timeout (a timer armed and cancelled per request costs measurable
        # CPU): a flush is bounded by the Redis client's socket timeout, and its fallback by
        # the database's, and every batch's outcome is handed to its waiters.
        self._ensure_thread()
        slot: _Slot[E, R] = _Slot(event, self._new_done())
        with self._guard():
            self._queue.append(slot)
            self._notify()
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None  # the writer sets a result or an error before it signals
        return slot.result

    def _idle_due(self) -> bool:
        return self._idle is not None and self._idle_wanted is not None and self._idle_wanted()

    def _guard(self) -> Any:
        """What guards the queue: nothing under gevent (greenlets switch only where they block)."""
        return contextlib.nullcontext() if self._greenlets else self._cond

    def _notify(self) -> None:
        if self._greenlets:
            self._wake.set()
        else:
            self._cond.notify()

    def _wait(self, timeout: float | None) -> bool:
        """Wait (the queue guarded, if it is) for a notify; False when ``timeout`` passed first."""
        if self._greenlets:
            self._wake.clear()
            return bool(self._wake.wait(timeout))
        return self._cond.wait(timeout)

    def _next_batch(self) -> list[_Slot[E, R]]:
        """What has queued up (waiting for it); empty when the idle work is due instead."""
        with self._guard():
            while not self._queue:
                idle_due = self._idle_due()
                woken = self._wait(self.IDLE_SECONDS if idle_due else None)
                if idle_due and not woken and not self._queue:
                    return []
            if self._greenlets:
                self._gather()
            batch, self._queue = self._queue, []
            return batch

    def _gather(self) -> None:
        """Under gevent: before taking the batch, let the process run everything that is ready
        (the loop's idle moment), at most ``GATHER_SECONDS``. Requests whose upstream answer
        arrived in the same turn of the loop finish and join this batch instead of the next:
        at 16 connections a batch grew from 5 events to 12-16, and the worker's CPU per request
        fell by about 5% (one Redis round trip costs the worker tens of microseconds of
        system calls). With nothing else ready (one connection) the idle moment is at once.
        The bound keeps a process that never idles (saturated by thousands of streams) from
        holding its records back: they go after ``GATHER_SECONDS`` at the latest."""
        from gevent import get_hub
        from gevent.hub import Waiter

        hub = get_hub()
        idle = hub.loop.idle()
        timer = hub.loop.timer(self.GATHER_SECONDS)
        waiter: Waiter[None] = Waiter(hub)
        idle.start(waiter.switch, None)
        timer.start(waiter.switch, None)
        try:
            waiter.get()
        finally:
            idle.close()
            timer.close()

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                assert self._idle is not None
                try:
                    self._idle()
                except Exception:  # noqa: BLE001 - retried at the next idle turn or write
                    logger.warning("%s: idle work failed", self._name, exc_info=True)
                continue
            try:
                results = self._flush([slot.event for slot in batch])
                for slot, result in zip(batch, results, strict=True):
                    slot.result = result
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter, never swallowed
                for slot in batch:
                    slot.error = exc
            for slot in batch:
                slot.done.set()


def _write_to_database(events: list[PendingEvent]) -> None:

    try:
        touched = ingest_events(decode_payload(e.payload()) for e in events)
        refresh_buckets(touched)
    finally:
        connection.close()  # the writer thread must not hold a connection between batches


class Recorder:
    def record(self, event: PendingEvent) -> list[int]:
        """Make ``event`` durable; return the counters' values after their increments."""
        raise NotImplementedError


class NullRecorder(Recorder):
    """Benchmark-only (GATEWAY_RECORDING_ENABLED=0): records nothing."""

    def record(self, event: PendingEvent) -> list[int]:
        return [0 for _ in event.counters]


class LocalCounters:
    """In-process counters for the embedded default (one process, no Redis)."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}
        self._lock = threading.Lock()

    def incr(self, key: str, amount: int) -> int:
        with self._lock:
            value = self._values.get(key, 0) + amount
            self._values[key] = value
            return value

    def get(self, key: str) -> int | None:
        return self._values.get(key)

    def set_if_missing(self, key: str, value: int) -> None:
        with self._lock:
            self._values.setdefault(key, value)


local_counters = LocalCounters()


class DatabaseRecorder(Recorder):
    def __init__(self) -> None:
        self._writer = GroupCommitWriter(self._flush, "usage-db-writer")
        # Replay every spool file at the first successful write of a process (what an
        # earlier process left), then this process's own after each recovery.
        self._replay_pending = True

    def _flush(self, events: list[PendingEvent]) -> list[list[int]]:
        try:
            _write_to_database(events)
        except Exception:
            logger.exception("usage: database write failed; spooling %d events", len(events))
            spool_write(events, with_counters=False)  # the local counters are incremented below
            self._replay_pending = True
        else:
            if self._replay_pending:
                self._replay_pending = False
                try:
                    count = spool_replay()
                    if count:
                        logger.warning("usage: replayed %d spooled events into the database", count)
                except Exception:
                    logger.exception("usage: spool replay failed; retrying after the next write")
                    self._replay_pending = True
                finally:
                    connection.close()
        return [[local_counters.incr(c.key, c.amount) for c in e.counters] for e in events]

    def record(self, event: PendingEvent) -> list[int]:
        return self._writer.submit(event)


class RedisStreamRecorder(Recorder):
    """Batches go to Redis through ``apply_batch`` (exactly once per batch, usage/redis_batch.py)."""

    def __init__(self) -> None:
        self._writer = GroupCommitWriter(
            self._flush, "usage-redis-writer", idle=self._replay_own_spool, idle_wanted=self._has_spool
        )
        self._pid = 0
        self._name = ""
        self._seq = 0
        self._spooled = False  # this process has spooled batches not replayed yet
        self._retired = False  # replaced (reset_recorder): no more idle work
        self._connection = BatchConnection()  # used by the writer thread only

    def _batch_id(self) -> tuple[str, int]:
        if self._pid != os.getpid():  # a new process (fork): its own writer name and sequence
            self._pid = os.getpid()
            self._name = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
            self._seq = 0
            self._spooled = False
        self._seq += 1
        return self._name, self._seq

    def _spool(self, events: list[PendingEvent], batch: tuple[str, int]) -> list[list[int]]:
        try:
            spool_write(events, with_counters=True, batch=batch)
        except OSError:
            # Last resort (disk full or read-only): the records reach the database, but the
            # counters miss these increments until their next re-seeding. Never silent.
            logger.exception(
                "usage: spooling failed too; writing %d events to the database WITHOUT their counter increments",
                len(events),
            )
            _write_to_database(events)
            return [[] for _ in events]
        self._spooled = True
        return [[] for _ in events]  # the counters' values are unknown now: no spend is reported

    def _has_spool(self) -> bool:
        return self._spooled and not self._retired and self._pid == os.getpid()

    def retire(self) -> None:
        """No more idle replays from this recorder: it was replaced (``reset_recorder``), and
        its spool is left to the next replay of every file (the periodic task, a new process)."""
        self._retired = True

    def _replay_own_spool(self) -> None:
        """Replay this process's spool (before its next batch, or after a second without one)."""
        if self._retired:
            return
        try:
            count = spool_replay(own_only=True)
        except Exception:
            logger.warning("usage: spool replay failed; this batch is spooled too", exc_info=True)
            return
        self._spooled = False
        if count:
            logger.warning("usage: Redis is back; replayed %d spooled events", count)

    def _flush(self, events: list[PendingEvent]) -> list[list[int]]:
        client = get_redis()
        assert client is not None
        batch = self._batch_id()
        if self._spooled:
            self._replay_own_spool()
            if self._spooled:  # keep the batches in order: spool this one behind the others
                return self._spool(events, batch)
        items = [(e.payload(), [(c.key, c.amount, c.ttl_seconds or 0) for c in e.counters]) for e in events]
        try:
            values = self._connection.apply(client, settings.GATEWAY["USAGE_STREAM"], batch[0], batch[1], items)
        except Exception:
            logger.exception("usage: Redis write failed; spooling %d events with their counter increments", len(events))
            return self._spool(events, batch)
        if values is None:  # applied by an earlier try whose reply was lost
            return [[] for _ in events]
        return values

    def record(self, event: PendingEvent) -> list[int]:
        return self._writer.submit(event)


_recorder: Recorder | None = None


def get_recorder() -> Recorder:
    global _recorder
    if _recorder is None:
        if not settings.GATEWAY["RECORDING_ENABLED"]:
            _recorder = NullRecorder()
        elif settings.REDIS_URL:
            _recorder = RedisStreamRecorder()
        else:
            _recorder = DatabaseRecorder()
    return _recorder


def reset_recorder() -> None:
    """Forget the process's recorder; the next ``get_recorder()`` builds one for the settings
    of then. Used where settings change under a live process (tests point it at another Redis
    or spool directory): the old recorder's writer thread stays, asleep, and replays nothing
    more, so a spool it left cannot go into the Redis of whoever comes next."""
    global _recorder
    if isinstance(_recorder, RedisStreamRecorder):
        _recorder.retire()
    _recorder = None
