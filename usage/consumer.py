"""Moves usage events from the Redis stream into Postgres, exactly once per request.

Consumer group ``gw-ingest``. A batch is read, inserted (idempotently: unique
``request_id``), committed, and only then acknowledged and deleted from the stream. A
worker killed between insert and ack leaves the entries pending; the next drain claims
entries pending longer than ``claim_idle_ms`` and inserts them again, which the unique
constraints turn into no-ops. So: no loss, no duplicates.

One bad event never stops the others: when a batch fails, its entries are inserted one
by one; the ones that fail stay pending and their failed tries are counted (Redis hash
``gw:usage:failures``); after ``GATEWAY_USAGE_MAX_ATTEMPTS`` tries an entry moves to the
dead letters (``UsageDeadLetter``, usage/deadletters.py) and is acknowledged. An entry
that cannot be decoded goes there at once. The database being down is not a failed try:
the drain stops and is retried, and nothing is dead-lettered.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_datetime
from redis.exceptions import ResponseError

from gatewaysite.clock import now
from gatewaysite.redis import get_redis
from usage.deadletters import TRANSIENT_ERRORS, describe_error
from usage.events import decode_payload
from usage.ingest import ingest_events

logger = logging.getLogger(__name__)

GROUP = "gw-ingest"


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def ensure_group() -> None:
    client = get_redis()
    assert client is not None
    try:
        client.xgroup_create(settings.GATEWAY["USAGE_STREAM"], GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


FAILURES = "gw:usage:failures"  # hash: <entry id> -> failed tries, <entry id>:first -> first failure


@dataclass
class _Entry:
    entry_id: str
    raw: bytes
    event: dict[str, Any] | None
    error: str = ""  # why it could not be ingested (decoding or inserting)


def _decode(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[_Entry]:
    decoded = []
    for entry_id, fields in entries:
        key = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        raw = fields.get(b"e")
        if raw is None:
            decoded.append(_Entry(key, b"", None, "the stream entry has no event field"))
            continue
        try:
            decoded.append(_Entry(key, raw, decode_payload(raw)))
        except ValueError as exc:
            decoded.append(_Entry(key, raw, None, describe_error(exc)))
    return decoded


def _ingest_isolating(entries: list[_Entry]) -> set[tuple[str, datetime]]:
    """Insert the batch in one transaction; if it fails, entry by entry (errors kept on the entries).

    A database outage is raised at once: nothing is the entries' fault then.
    """
    good = [e for e in entries if e.event is not None]
    if not good:
        return set()
    try:
        return ingest_events(e.event for e in good if e.event is not None)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - isolated below, one entry at a time
        logger.warning("usage: a batch of %d failed (%s); ingesting entry by entry", len(good), describe_error(exc))
    touched: set[tuple[str, datetime]] = set()
    for entry in good:
        assert entry.event is not None
        try:
            touched |= ingest_events([entry.event])
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - counted, then dead-lettered (_settle_failures)
            entry.error = describe_error(exc)
    return touched


def _settle_failures(client: Any, failed: list[_Entry]) -> list[str]:
    """Count a failed try per entry; return the ids moved to the dead letters (to acknowledge).

    An entry that cannot even be decoded is dead-lettered at once: no retry can fix it.
    The others stay pending and are claimed again by a later drain (``claim_idle_ms``).
    """
    from usage.deadletters import deadletter_record

    if not failed:
        return []
    moment = now().isoformat()
    pipe = client.pipeline(transaction=False)
    for entry in failed:
        pipe.hincrby(FAILURES, entry.entry_id, 1)
        pipe.hsetnx(FAILURES, entry.entry_id + ":first", moment)
        pipe.hget(FAILURES, entry.entry_id + ":first")
    replies = pipe.execute()
    limit = settings.GATEWAY["USAGE_MAX_ATTEMPTS"]
    dead = []
    for index, entry in enumerate(failed):
        attempts = int(replies[index * 3])
        first = replies[index * 3 + 2]
        if entry.event is not None and attempts < limit:
            logger.warning("usage: entry %s failed (try %d of %d): %s", entry.entry_id, attempts, limit, entry.error)
            continue
        first_seen = parse_datetime(first.decode()) if first else None
        deadletter_record(
            stream_id=entry.entry_id,
            payload=entry.raw,
            error=entry.error,
            attempts=attempts,
            first_seen=first_seen or now(),
        )
        dead.append(entry.entry_id)
    return dead


def _process(
    entries: list[tuple[bytes, dict[bytes, bytes]]],
    after_insert: Callable[[], None] | None,
    *,
    redelivered: bool = False,
) -> tuple[int, set[tuple[str, datetime]]]:
    client = get_redis()
    assert client is not None
    stream = settings.GATEWAY["USAGE_STREAM"]
    decoded = _decode(entries)
    touched = _ingest_isolating(decoded)
    if after_insert is not None:
        after_insert()  # tests: simulate a crash between commit and ack
    failed = [e for e in decoded if e.error]
    done = [e.entry_id for e in decoded if not e.error] + _settle_failures(client, failed)
    if done:
        pipe = client.pipeline(transaction=False)
        pipe.xack(stream, GROUP, *done)
        pipe.xdel(stream, *done)
        if redelivered or failed:  # only entries delivered before can have failed tries on record
            pipe.hdel(FAILURES, *done, *(i + ":first" for i in done))
        pipe.execute()
    return len(decoded) - len(failed), touched


def drain(
    *,
    batch_size: int = 500,
    max_batches: int = 20,
    claim_idle_ms: int = 30_000,
    after_insert: Callable[[], None] | None = None,
) -> int:
    """Ingest what is in the stream now (pending-too-long entries first); return the count."""
    from routing.latency.rollup import refresh_buckets

    client = get_redis()
    if client is None:
        return 0
    ensure_group()
    stream = settings.GATEWAY["USAGE_STREAM"]
    name = consumer_name()
    total = 0
    touched: set[tuple[str, datetime]] = set()
    # 1. entries another consumer read but never acknowledged (it died)
    start = "0-0"
    for _ in range(max_batches):
        start, claimed, *_ = client.xautoclaim(
            stream, GROUP, name, min_idle_time=claim_idle_ms, start_id=start, count=batch_size
        )
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if claimed:
            count, buckets = _process(claimed, after_insert, redelivered=True)
            total += count
            touched |= buckets
        if start in (b"0-0", "0-0"):
            break
    # 2. new entries
    for _ in range(max_batches):
        # redis-py types the reply for RESP3 (a dict); the client speaks RESP2: [[stream, entries]]
        response: Any = client.xreadgroup(GROUP, name, {stream: ">"}, count=batch_size)
        if not response:
            break
        entries = response[0][1]
        if not entries:
            break
        count, buckets = _process(entries, after_insert)
        total += count
        touched |= buckets
    if touched:
        refresh_buckets(touched)
    return total
