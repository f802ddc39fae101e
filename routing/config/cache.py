"""The process-wide configuration cache.

``config_cache.current()`` returns the snapshot the request path routes with. It is
rebuilt (5 queries) when:
- this process changed the configuration (``invalidate_local``, immediate), or
- the poller sees ``ConfigVersion`` move (another process changed it): at once when the
  writer's announcement arrives over Redis pub/sub, else within
  ``GATEWAY.CONFIG_POLL_SECONDS`` (default 0.5 s).
After every poll the process acknowledges the version it serves in Redis, so writers can
wait until every process serves their change (``routing/config/propagation.py``).
Listeners (the key cache) are cleared at the same moments.

Prices: ``pricing_snapshot(at)`` returns a snapshot that is known to hold every pricing
row in effect at ``at`` (``routing/config/notice.py`` explains why that is exact).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection

from gatewaysite.clock import now
from routing.config import propagation
from routing.config.notice import notice, read_version_state
from routing.config.snapshot import Snapshot, load_snapshot

logger = logging.getLogger(__name__)

NEVER = datetime.min.replace(tzinfo=UTC)


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
        self._polling = False
        # Every pricing row written before this moment is in the snapshot (notice.py).
        self._confirmed_at = NEVER
        self._notice = timedelta(0)  # set when polling starts

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def current(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None or self._stale:
            snapshot = self._reload()
        if not self._poll_started:
            self._start_poller()
        return snapshot

    def pricing_snapshot(self, at: datetime) -> Snapshot:
        """A snapshot holding every pricing row in effect at ``at`` (a request's receipt).

        In the steady state that is the current snapshot (the poller confirms it every
        poll). Only when the poller fell behind by more than the notice does this read the
        version first (one query); if the database cannot answer, the last snapshot is used
        and a warning logged (no price can have been written meanwhile unless the writer
        reached a database this process cannot).
        """
        snapshot = self.current()
        if not self._polling or at <= self._confirmed_at + self._notice:
            return snapshot
        try:
            self.confirm()
        except Exception:
            logger.warning("could not confirm the price list for a request received at %s", at, exc_info=True)
            close_old_connections()
            return snapshot
        return self._snapshot or snapshot

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
            started = now()
            try:
                version, quiet = read_version_state()
                snapshot = load_snapshot(version)
            except Exception:
                self._stale = True
                raise
            self._snapshot = snapshot
            if quiet:
                self._confirmed_at = max(self._confirmed_at, started)
            return snapshot

    def confirm(self) -> Snapshot:
        """Check the version now (one query); reload when it moved. Renews ``pricing_snapshot``'s horizon."""
        started = now()
        version, quiet = read_version_state()
        current = self._snapshot
        if current is None or self._stale or version != current.version:
            self._stale = True
            self._notify()
            self._reload()
        if quiet:
            self._confirmed_at = max(self._confirmed_at, started)
        return self._snapshot  # type: ignore[return-value]  # _reload above set it

    def catch_up(self) -> None:
        """After a write in this process: serve it and say so (when this process serves requests)."""
        if not self._polling:
            return
        try:
            snapshot = self.confirm()
        except Exception:
            logger.warning("could not reload the configuration after a write", exc_info=True)
            return
        propagation.acknowledge(snapshot.version)

    def _start_poller(self) -> None:
        interval = settings.GATEWAY["CONFIG_POLL_SECONDS"]
        with self._lock:
            if self._poll_started:
                return
            self._poll_started = True
            if interval:
                self._notice = notice()
                self._polling = True
                threading.Thread(target=self._poll, args=(interval,), name="config-poller", daemon=True).start()

    def _poll(self, interval: float) -> None:
        signal = propagation.ChangeSignal()
        while True:
            try:
                self.confirm()
            except Exception:  # the database may be restarting: keep serving the last snapshot
                logger.warning("config poll failed; keeping the current snapshot", exc_info=True)
                close_old_connections()
                connection.close()
            snapshot = self._snapshot
            if snapshot is not None:
                # also a heartbeat: a process that cannot reach the database is seen lagging, not dead
                propagation.acknowledge(snapshot.version)
            signal.wait(interval)

    def reset_for_tests(self) -> None:
        self._snapshot = None
        self._stale = True
        self._confirmed_at = NEVER
        self._notify()


config_cache = ConfigCache()
