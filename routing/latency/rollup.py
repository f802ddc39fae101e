"""Per-minute latency rollups from raw samples (placeholder: filled in by the latency work)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime


def refresh_buckets(buckets: Iterable[tuple[str, datetime]]) -> None:
    """Recompute the rollups of the given (deployment, minute) buckets from raw samples."""
    return None
