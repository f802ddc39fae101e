"""Who else sees a finished usage event: a small registry, so the request path need not know.

The request path hands every finished usage record (and its latency samples, one per
attempt) to ``observe_usage`` just before the recorder makes it durable. Monitoring sits
above routing (it reads the configuration, latency and usage to report on them), so it
does not get called by name: it registers its observer when it starts
(``monitoring/apps.py``: the process's metrics and the request's log line).
"""

from __future__ import annotations

from collections.abc import Callable

from usage.events import LatencySampleData, UsageRecordData

UsageObserver = Callable[[UsageRecordData, list[LatencySampleData]], None]

_observers: list[UsageObserver] = []


def on_usage(observer: UsageObserver) -> None:
    if observer not in _observers:
        _observers.append(observer)


def observe_usage(record: UsageRecordData, samples: list[LatencySampleData]) -> None:
    """Show a finished usage event to every observer. Observers must not raise: this is the request path."""
    for observer in _observers:
        observer(record, samples)
