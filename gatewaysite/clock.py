"""The one clock of the project. Tests swap it instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


clock = Clock()


def now() -> datetime:
    return clock.now()


def monotonic() -> float:
    return clock.monotonic()
