"""Moves usage events from the Redis stream into Postgres, exactly once per request.

Consumer group ``gw-ingest``. A batch is read, inserted (idempotently: unique
``request_id``), committed, and only then acknowledged and deleted from the stream. A
worker killed between insert and ack leaves the entries pending; the next drain claims
entries pending longer than ``claim_idle_ms`` and inserts them again, which the unique
constraints turn into no-ops. So: no loss, no duplicates.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from redis.exceptions import ResponseError

from gatewaysite.redis import get_redis
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


def _process(
    entries: list[tuple[bytes, dict[bytes, bytes]]], after_insert: Callable[[], None] | None
) -> tuple[int, set[tuple[str, datetime]]]:
    client = get_redis()
    assert client is not None
    stream = settings.GATEWAY["USAGE_STREAM"]
    ids = [entry_id for entry_id, _ in entries]
    events = []
    for entry_id, fields in entries:
        raw = fields.get(b"e")
        if raw is None:
            continue
        try:
            events.append(decode_payload(raw))
        except ValueError:
            logger.error("usage: dropping undecodable stream entry %s", entry_id)
    touched = ingest_events(events) if events else set()
    if after_insert is not None:
        after_insert()  # tests: simulate a crash between commit and ack
    if ids:
        pipe = client.pipeline(transaction=False)
        pipe.xack(stream, GROUP, *ids)
        pipe.xdel(stream, *ids)
        pipe.execute()
    return len(events), touched


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
            count, buckets = _process(claimed, after_insert)
            total += count
            touched |= buckets
        if start in (b"0-0", "0-0"):
            break
    # 2. new entries
    for _ in range(max_batches):
        response = client.xreadgroup(GROUP, name, {stream: ">"}, count=batch_size)
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
