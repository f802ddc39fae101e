"""The spool: usage events kept on local disk while they cannot reach Redis (or the database).

One file per process, ``var/spool/usage-<pid>.jsonl``, one JSON line per event: the
event (``record``, ``samples``) and, from the Redis recorder, its counter increments
(``counters``: ``[key, amount, ttl]``), each line fsync'd before the request is answered.

``spool_replay`` sends the events back the way they should have gone, and is idempotent:
- with Redis (``REDIS_URL``): per event one Lua script that, once per ``request_id``
  (marker ``gw:usage:spooled:<request_id>``, kept 7 days), appends the event to the usage
  stream and applies its counter increments, atomically. So the counters get exactly the
  increments they missed, never twice, and the consumer ingests the record as usual;
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

from gatewaysite.redis import get_redis
from usage.events import PendingEvent

logger = logging.getLogger(__name__)

MARKER_TTL_SECONDS = 7 * 86_400
REPLAY_CHUNK = 200

_REPLAY = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
  for i = 3, #KEYS do
    local at = (i - 3) * 2 + 3
    redis.call('INCRBY', KEYS[i], ARGV[at])
    if tonumber(ARGV[at + 1]) > 0 then redis.call('EXPIRE', KEYS[i], ARGV[at + 1]) end
  end
  return 1
end
return 0
"""


def spool_dir() -> Path:
    return Path(settings.VAR_DIR) / "spool"


def own_spool_path() -> Path:
    return spool_dir() / f"usage-{os.getpid()}.jsonl"


def _line(event: PendingEvent, with_counters: bool) -> bytes:
    data: dict[str, Any] = {"record": event.record, "samples": event.samples}
    if with_counters:
        data["counters"] = [[c.key, c.amount, c.ttl_seconds or 0] for c in event.counters]
    return orjson.dumps(data, default=str) + b"\n"


def spool_write(events: list[PendingEvent], *, with_counters: bool) -> None:
    """Append ``events`` to this process's spool file, durably (fsync) before returning."""
    data = b"".join(_line(e, with_counters) for e in events)
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
    script = client.register_script(_REPLAY)
    stream = settings.GATEWAY["USAGE_STREAM"]
    for start in range(0, len(events), REPLAY_CHUNK):
        pipe = client.pipeline(transaction=False)
        for data in events[start : start + REPLAY_CHUNK]:
            counters = data.get("counters") or []
            keys = [f"gw:usage:spooled:{data['record']['request_id']}", stream, *(c[0] for c in counters)]
            payload = orjson.dumps({"record": data["record"], "samples": data.get("samples") or []})
            args: list[Any] = [MARKER_TTL_SECONDS, payload]
            for _, amount, ttl in counters:
                args += [int(amount), int(ttl or 0)]
            script(keys=keys, args=args, client=pipe)
        pipe.execute()


def _replay_to_database(events: list[dict[str, Any]]) -> None:
    from routing.latency.rollup import refresh_buckets
    from usage.ingest import ingest_events

    refresh_buckets(ingest_events(events))


def _replay_file(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0  # another replayer finished it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another replayer is on it
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


def spool_replay(*, own_only: bool = False) -> int:
    """Replay spooled events (see the module docstring); return how many were replayed.

    ``own_only``: only this process's file (the recorder after a recovery). Raises when
    Redis or the database fails; what was not replayed stays spooled for the next try.
    """
    directory = spool_dir()
    if not directory.is_dir():
        return 0
    live = [own_spool_path()] if own_only else sorted(directory.glob("usage-*.jsonl"))
    taken = [t for path in live if (t := _take(path)) is not None]
    if own_only:
        pending = taken + sorted(directory.glob(f"usage-{os.getpid()}.*.replaying"))
    else:
        pending = sorted(directory.glob("usage-*.replaying"))
    return sum(_replay_file(path) for path in dict.fromkeys(pending))
