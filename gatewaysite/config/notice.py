"""Prices take effect at a known instant, never before every process can see them.

A request received at ``r`` is billed by the pricing row in effect at ``r``. Processes
learn about new rows only when they reload their snapshot, so two rules make that exact:

- **Writers give notice.** A new or changed row takes effect no earlier than
  ``N = GATEWAY_CONFIG_PROPAGATION_SECONDS`` after it is written ("now" means write time
  plus N), and rows within N of taking effect (or in effect) are frozen. Every pricing
  write holds an exclusive advisory lock for its whole transaction and reads the clock
  only after taking it (``pricing_write_lock``).
- **Readers know how far their snapshot is good.** When a process reads the
  configuration version while no pricing write is in progress (it can take the shared
  side of the same lock), every pricing row written so far is in its snapshot and any
  later one takes effect more than N after that moment. So its snapshot prices every
  request received up to that moment plus N (``ConfigCache.pricing_snapshot``); the
  poller renews the moment every poll, and a request past it (a poller that fell behind)
  re-reads the version first.

On SQLite (the embedded default: one process) there is no advisory lock; SQLite
serialises writers, and the argument holds as long as a commit takes less than N.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection

from gatewaysite.models import ConfigVersion

# pg_advisory_*lock key of pricing writes ("gwprice" in ASCII).
PRICING_LOCK = 0x67777072696365


def propagation_seconds() -> float:
    return float(settings.GATEWAY["CONFIG_PROPAGATION_SECONDS"])


def notice() -> timedelta:
    return timedelta(seconds=propagation_seconds())


def earliest_effective_from(at: datetime) -> datetime:
    """The earliest moment a price written at ``at`` may take effect."""
    return at + notice()


def pricing_write_lock() -> None:
    """Take the pricing write lock until the end of the current transaction (call inside ``atomic``)."""
    if connection.vendor != "postgresql":
        return
    if not connection.in_atomic_block:
        raise RuntimeError("pricing writes must run in a transaction (the lock lasts until it commits)")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PRICING_LOCK])


def read_version() -> int:
    """The configuration version in the database (one query)."""
    value = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return int(value or 0)


def read_version_state() -> tuple[int, bool]:
    """(configuration version, no pricing write in progress at the moment of reading).

    The shared lock is taken and released in the same statement, so a reader never
    holds it, even inside a transaction.
    """
    if connection.vendor != "postgresql":
        return read_version(), True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT version FROM routing_configversion WHERE id = 1), "
            "CASE WHEN pg_try_advisory_lock_shared(%s) THEN pg_advisory_unlock_shared(%s) ELSE false END",
            [PRICING_LOCK, PRICING_LOCK],
        )
        version, quiet = cursor.fetchone()
    return int(version or 0), bool(quiet)
