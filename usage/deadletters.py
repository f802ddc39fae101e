"""Dead letters: usage events the consumer could not ingest, kept raw until replayed.

The consumer (usage/consumer.py) isolates an entry whose batch fails, counts its failed
tries in Redis, and after ``GATEWAY_USAGE_MAX_ATTEMPTS`` moves it here and acknowledges
it, so one bad event never holds up the others. After a fix (a migration, a code
change), ``deadletter_replay`` ingests the kept payloads again: the admin action
"Replay" and ``manage.py usage_deadletters replay`` both call it. A replay is
idempotent (the record's ``request_id`` is unique), so replaying twice changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import InterfaceError, OperationalError

from gatewaysite.clock import now
from usage.events import decode_payload
from usage.ingest import ingest_events
from usage.latency.rollup import refresh_buckets
from usage.models import UsageDeadLetter

logger = logging.getLogger(__name__)

# The database being unreachable is not the event's fault: such errors never count as a
# failed try and never dead-letter anything; the drain is retried as a whole.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _request_id_of(payload: bytes) -> str:
    try:
        event = decode_payload(payload)
        return str(event["record"]["request_id"])[:40]
    except Exception:  # noqa: BLE001 - an undecodable payload has no request id; it is kept raw
        return ""


def deadletter_record(
    *, stream_id: str, payload: bytes, error: str, attempts: int, first_seen: datetime
) -> UsageDeadLetter:
    """Keep an event the consumer gave up on (idempotent per stream entry)."""
    letter, _ = UsageDeadLetter.objects.update_or_create(
        stream_id=stream_id,
        defaults={
            "request_id": _request_id_of(payload),
            "payload": payload.decode("utf-8", errors="replace"),
            "error": error,
            "attempts": attempts,
            "first_seen": first_seen,
            "last_seen": now(),
            "replayed_at": None,
        },
    )
    logger.error("usage: stream entry %s moved to the dead letters after %d tries: %s", stream_id, attempts, error)
    return letter


@dataclass
class ReplayOutcome:
    replayed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def deadletter_replay(*, ids: Iterable[int] | None = None) -> ReplayOutcome:
    """Ingest dead letters again: the given ids, or every one not yet replayed.

    A letter that ingests gets ``replayed_at``; one that fails again keeps its place with
    the new error and one more attempt. A database outage stops the replay (raised).
    """

    letters = UsageDeadLetter.objects.order_by("first_seen", "id")
    letters = letters.filter(replayed_at__isnull=True) if ids is None else letters.filter(pk__in=list(ids))
    outcome = ReplayOutcome()
    touched: set[tuple[str, datetime]] = set()
    for letter in letters:
        moment = now()
        try:
            touched |= ingest_events([decode_payload(letter.payload.encode())])
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - kept on the letter for the operator
            letter.error = describe_error(exc)
            letter.attempts += 1
            letter.last_seen = moment
            letter.save(update_fields=["error", "attempts", "last_seen"])
            outcome.failed[letter.pk] = letter.error
            continue
        letter.replayed_at = moment
        letter.save(update_fields=["replayed_at"])
        outcome.replayed.append(letter.pk)
    if touched:
        refresh_buckets(touched)
    return outcome
