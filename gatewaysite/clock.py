"""The one clock of the project. Tests swap it instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """The real clock. ``time`` and ``monotonic`` are the C functions themselves (no Python
    frame on the request path's dozen reads); a test replaces them on the instance."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def now(self) -> datetime:
        return datetime.now(UTC)


clock = Clock()


def now() -> datetime:
    return clock.now()


def monotonic() -> float:
    return clock.monotonic()
