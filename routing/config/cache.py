"""The process-wide configuration cache.

``config_cache.current()`` returns the snapshot the request path routes with. It is
rebuilt (5 queries) when:
- this process changed the configuration (``invalidate_local``, immediate), or
- the poller sees ``ConfigVersion`` move (another process changed it), within
  ``GATEWAY.CONFIG_POLL_SECONDS`` (default 0.5 s).
Listeners (the key cache) are cleared at the same moments, so a revoked key stops
working on every process within about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import close_old_connections, connection

from routing.config.snapshot import Snapshot, load_snapshot

logger = logging.getLogger(__name__)


def read_version() -> int:
    from routing.models import ConfigVersion

    value = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return int(value or 0)


class ConfigCache:
    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._stale = True
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._poll_started = False  # decided once per process: a poller thread, or none when polling is off

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def current(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None or self._stale:
            snapshot = self._reload()
        if not self._poll_started:
            self._start_poller()
        return snapshot

    def invalidate_local(self) -> None:
        self._stale = True
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def _reload(self) -> Snapshot:
        with self._lock:
            if self._snapshot is not None and not self._stale:
                return self._snapshot
            self._stale = False
            version = read_version()
            try:
                snapshot = load_snapshot(version)
            except Exception:
                self._stale = True
                raise
            self._snapshot = snapshot
            return snapshot

    def _start_poller(self) -> None:
        interval = settings.GATEWAY["CONFIG_POLL_SECONDS"]
        with self._lock:
            if self._poll_started:
                return
            self._poll_started = True
            if interval:
                threading.Thread(target=self._poll, args=(interval,), name="config-poller", daemon=True).start()

    def _poll(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            try:
                version = read_version()
                current = self._snapshot
                if current is None or version != current.version:
                    self._stale = True
                    self._notify()
                    self._reload()
            except Exception:  # the database may be restarting: keep serving the last snapshot
                logger.warning("config poll failed; keeping the current snapshot", exc_info=True)
                close_old_connections()
                connection.close()

    def reset_for_tests(self) -> None:
        self._snapshot = None
        self._stale = True
        self._notify()


config_cache = ConfigCache()
