"""The spool: usage events kept on local disk while they cannot reach Redis (or the database).

One file per process, ``var/spool/usage-<pid>.jsonl``, one JSON line per event: the
event (``record``, ``samples``) and, from the Redis recorder, its counter increments
(``counters``: ``[key, amount, ttl]``) and its batch (``batch``: writer, seq), each
batch fsync'd before its requests are answered.

``spool_replay`` sends the events back the way they should have gone, and is idempotent:
- with Redis (``REDIS_URL``): each batch through ``apply_batch`` (usage/redis_batch.py),
  which appends the events to the usage stream and applies their counter increments
  atomically, once per batch. So the counters get exactly the increments they missed,
  never twice (not even when Redis had applied the batch before its reply was lost),
  and the consumer ingests the records as usual;
- embedded (no Redis): the events are inserted into the database directly (its counters
  live in process and were incremented when the event was spooled).

Who replays: the recorder that spooled, after its next successful write; the periodic
task ``usage.replay_spool`` (every 10 s, files of every process sharing ``var/``,
including dead ones); the embedded recorder at its first write in a process.

Writers and replayers coordinate with ``flock``: a replayer takes a file by renaming it
under the writer's lock (``usage-<pid>.jsonl`` -> ``usage-<pid>.<random>.replaying``),
so a writer never appends to a file being replayed, and never blocks on a replay.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from gatewaysite.redis_client import get_redis
from usage.events import PendingEvent
from usage.ingest import ingest_events
from usage.latency.rollup import refresh_buckets
from usage.redis_batch import apply_batch

logger = logging.getLogger(__name__)


def spool_dir() -> Path:
    return Path(settings.VAR_DIR) / "spool"


def own_spool_path() -> Path:
    return spool_dir() / f"usage-{os.getpid()}.jsonl"


def _line(event: PendingEvent, with_counters: bool, batch: tuple[str, int] | None) -> bytes:
    data: dict[str, Any] = {"record": event.record, "samples": event.samples}
    if with_counters:
        data["counters"] = [[c.key, c.amount, c.ttl_seconds or 0] for c in event.counters]
    if batch is not None:
        data["batch"] = list(batch)
    return orjson.dumps(data, default=str) + b"\n"


def spool_write(events: list[PendingEvent], *, with_counters: bool, batch: tuple[str, int] | None = None) -> None:
    """Append ``events`` (one batch) to this process's spool file, durably (fsync) before returning."""
    data = b"".join(_line(e, with_counters, batch) for e in events)
    path = own_spool_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                continue  # a replayer took this file between our open and our lock: open the new one
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            return
        finally:
            os.close(fd)  # also releases the lock


def _take(path: Path) -> Path | None:
    """Rename a live spool file for replay, under the writers' lock; None if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                return None
        except FileNotFoundError:
            return None
        taken = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:12]}.replaying")
        os.rename(path, taken)
        return taken
    finally:
        os.close(fd)


def _lines(raw: bytes, path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            data["record"]["request_id"]  # noqa: B018 - every event has one
        except (orjson.JSONDecodeError, KeyError, TypeError):
            # Only a process killed in the middle of a write leaves a torn line, and its
            # request was never answered. Kept in the log, since it cannot be replayed.
            logger.error("usage: spool %s line %d is not an event, skipped: %r", path.name, number, line[:2000])
            continue
        yield data


def _replay_to_redis(client: Any, events: list[dict[str, Any]]) -> None:
    """Each spooled batch once, in order; lines without a batch (embedded spool) get one per file."""
    stream = settings.GATEWAY["USAGE_STREAM"]
    fallback = f"spool:{uuid.uuid4().hex}"
    groups: list[tuple[tuple[str, int], list[dict[str, Any]]]] = []
    for index, data in enumerate(events):
        raw = data.get("batch")
        batch = (str(raw[0]), int(raw[1])) if isinstance(raw, list) and len(raw) == 2 else (fallback, index + 1)
        if groups and groups[-1][0] == batch:
            groups[-1][1].append(data)
        else:
            groups.append((batch, [data]))
    for (writer, seq), lines in groups:
        items = [
            (
                orjson.dumps({"record": line["record"], "samples": line.get("samples") or []}),
                [(str(c[0]), int(c[1]), int(c[2] or 0)) for c in line.get("counters") or []],
            )
            for line in lines
        ]
        apply_batch(client, stream, writer, seq, items)


def _replay_to_database(events: list[dict[str, Any]]) -> None:

    refresh_buckets(ingest_events(events))


def _replay_file(path: Path, *, wait: bool) -> int | None:
    """Replay one taken file and delete it; None when another replayer holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0  # another replayer finished it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if os.fstat(fd).st_nlink == 0:
            return 0
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read()
        events = list(_lines(raw, path))
        client = get_redis()
        if events:
            if client is not None:
                _replay_to_redis(client, events)
            else:
                _replay_to_database(events)
        os.unlink(path)  # only once every event is through; a failure leaves the file for the next try
        return len(events)
    finally:
        os.close(fd)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def spool_replay(*, own_only: bool = False) -> int:
    """Replay spooled events (see the module docstring); return how many were replayed.

    ``own_only``: only this process's files (the recorder after a recovery). Raises when
    Redis or the database fails; what was not replayed stays spooled for the next try.

    A writer's batches must go in order (usage/redis_batch.py): its files are replayed
    oldest first (a taken file is never written again, so modification times order
    them), and the first one another replayer holds stops that writer's turn: the
    owner waits for it, anyone else leaves the rest for later.
    """
    directory = spool_dir()
    if not directory.is_dir():
        return 0
    prefix = f"usage-{os.getpid()}" if own_only else "usage-*"
    for path in sorted(directory.glob(f"{prefix}.jsonl")):
        _take(path)
    by_writer: dict[str, list[Path]] = {}
    for path in sorted(directory.glob(f"{prefix}.*.replaying"), key=_mtime):
        by_writer.setdefault(path.name.split(".", 1)[0], []).append(path)
    count = 0
    for paths in by_writer.values():
        for path in paths:
            replayed = _replay_file(path, wait=own_only)
            if replayed is None:
                break
            count += replayed
    return count
