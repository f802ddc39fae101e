"""Outlier ejection: take a deployment out of rotation when it stands out from its peers.

Modelled on Envoy's outlier detection; the peers of a deployment are the deployments
of the same public model (Envoy's cluster). Per process, like the cooldowns of
routing/health.py (which stay the base case: N consecutive failures of any kind cool a
deployment down whether or not outlier detection is on): every process sees its own
traffic, judges it, and a deployment that misbehaves does so for every process alike.

Detectors (routing settings, ``outlier_*``; off unless ``outlier_enabled``):

- **consecutive 5xx**: ``outlier_consecutive_5xx`` upstream 5xx or gateway errors
  (connect failure, timeout) in a row eject at once;
- **success rate**: every ``outlier_interval_seconds``, among the model's deployments
  with at least ``outlier_request_volume`` requests in the interval - when there are at
  least ``outlier_minimum_hosts`` of them - eject those whose success rate is below
  ``mean - outlier_success_rate_stdev_factor * stdev``;
- **failure percentage**: same volume and host minimums; eject a deployment whose
  failure percentage is ``outlier_failure_percentage_threshold`` or more;
- **latency** (not in Envoy; off at 0): eject a deployment whose mean latency in the
  interval is more than ``outlier_latency_factor`` times the median of its peers'.

An ejection lasts ``outlier_base_ejection_seconds`` times the number of times the
deployment has been ejected, at most ``outlier_max_ejection_seconds``; each interval a
deployment passes without standing out lowers that multiplier by one. At most
``outlier_max_ejection_percent`` of a model's deployments are ejected at once, but
always at least one may be (Envoy's rule). When every deployment of a model is out,
planning uses them all anyway (as with cooldowns). Errors the client caused and 429s
are not the deployment's fault here: 429 has its own cooldown (``Retry-After``).
"""

from __future__ import annotations

import math
import statistics
import threading
from dataclasses import dataclass
from typing import Any

from gatewaysite.clock import monotonic
from routing.config.snapshot import RoutingSettingsInfo, Snapshot


@dataclass
class _Host:
    model: str = ""
    consecutive_5xx: int = 0
    ok: int = 0  # this interval
    failed: int = 0
    latency_sum_ms: float = 0.0
    ejected_until: float = 0.0
    ejections: int = 0  # the multiplier of the ejection time
    ejected_total: int = 0
    reason: str = ""


class OutlierDetector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}
        self._last_evaluation = monotonic()

    # --- the request path ------------------------------------------------------------

    def observe(
        self, deployment: str, model: str, *, ok: bool, server_error: bool, latency_ms: float, snapshot: Snapshot
    ) -> None:
        """One finished attempt. ``server_error``: an upstream 5xx or a gateway error (not 4xx/429)."""
        settings = snapshot.settings
        if not settings.outlier_enabled:
            return
        with self._lock:
            host = self._hosts.get(deployment)
            if host is None:
                host = self._hosts[deployment] = _Host(model=model)
            if ok:
                host.ok += 1
                host.latency_sum_ms += latency_ms
                host.consecutive_5xx = 0
                return
            host.failed += 1
            if not server_error:
                return
            host.consecutive_5xx += 1
            threshold = settings.outlier_consecutive_5xx
            if threshold and host.consecutive_5xx >= threshold:
                host.consecutive_5xx = 0
                self._eject(deployment, host, "consecutive_5xx", snapshot, monotonic())

    def ejected(self, deployment: str) -> bool:
        host = self._hosts.get(deployment)
        return host is not None and host.ejected_until > monotonic()

    def tick(self, snapshot: Snapshot) -> None:
        """Judge the finished interval if one has passed (cheap otherwise: one clock read)."""
        settings = snapshot.settings
        if not settings.outlier_enabled:
            return
        moment = monotonic()
        if moment - self._last_evaluation < settings.outlier_interval_seconds:
            return
        with self._lock:
            if moment - self._last_evaluation < settings.outlier_interval_seconds:
                return
            self._last_evaluation = moment
            self._evaluate(snapshot, moment)

    # --- judging ---------------------------------------------------------------------

    def _group_size(self, snapshot: Snapshot, model: str) -> int:
        return len(snapshot.deployments_for(model)) if model else 0

    def _may_eject(self, model: str, total: int, settings: RoutingSettingsInfo, moment: float) -> bool:
        ejected = sum(1 for h in self._hosts.values() if h.model == model and h.ejected_until > moment)
        allowed = max(1, math.floor(total * settings.outlier_max_ejection_percent / 100)) if total else 1
        return ejected < allowed

    def _eject(self, name: str, host: _Host, reason: str, snapshot: Snapshot, moment: float) -> None:
        if host.ejected_until > moment:
            return
        settings = snapshot.settings
        total = self._group_size(snapshot, host.model)
        if not self._may_eject(host.model, total, settings, moment):
            return
        host.ejections += 1
        host.ejected_total += 1
        seconds = min(settings.outlier_base_ejection_seconds * host.ejections, settings.outlier_max_ejection_seconds)
        host.ejected_until = moment + seconds
        host.reason = reason

    def _evaluate(self, snapshot: Snapshot, moment: float) -> None:
        settings = snapshot.settings
        groups: dict[str, list[tuple[str, _Host]]] = {}
        for name, host in self._hosts.items():
            groups.setdefault(host.model, []).append((name, host))
        verdicts: list[tuple[str, _Host, str]] = []
        for hosts in groups.values():
            judged = [
                (name, host)
                for name, host in hosts
                if host.ejected_until <= moment and host.ok + host.failed >= settings.outlier_request_volume
            ]
            standing_out: dict[str, str] = {}
            if len(judged) >= max(1, settings.outlier_minimum_hosts):
                rates = {name: host.ok / (host.ok + host.failed) for name, host in judged}
                if settings.outlier_success_rate_stdev_factor > 0 and len(rates) >= 2:
                    mean = statistics.fmean(rates.values())
                    stdev = statistics.pstdev(rates.values())
                    floor = mean - settings.outlier_success_rate_stdev_factor * stdev
                    for name, rate in rates.items():
                        if rate < floor:
                            standing_out.setdefault(name, "success_rate")
                if settings.outlier_failure_percentage_threshold > 0:
                    for name, rate in rates.items():
                        if (1 - rate) * 100 >= settings.outlier_failure_percentage_threshold:
                            standing_out.setdefault(name, "failure_percentage")
                if settings.outlier_latency_factor > 0:
                    means = {name: host.latency_sum_ms / host.ok for name, host in judged if host.ok}
                    for name, mean_ms in means.items():
                        peers = [v for other, v in means.items() if other != name]
                        if peers and mean_ms > settings.outlier_latency_factor * statistics.median(peers):
                            standing_out.setdefault(name, "latency")
            for name, host in hosts:
                reason = standing_out.get(name)
                if reason is not None:
                    verdicts.append((name, host, reason))
                elif host.ejected_until <= moment and host.ejections:
                    host.ejections -= 1  # a quiet interval: the next ejection will be shorter
        # worst first, so the ejection cap keeps out the worst
        verdicts.sort(key=lambda v: v[1].ok / max(1, v[1].ok + v[1].failed))
        for name, host, reason in verdicts:
            self._eject(name, host, reason, snapshot, moment)
        for host in self._hosts.values():
            host.ok = host.failed = 0
            host.latency_sum_ms = 0.0

    # --- reading ---------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        """Per deployment known here: ejected or not, for how long, why, and the interval's counts."""
        moment = monotonic()
        with self._lock:
            return {
                name: {
                    "ejected": host.ejected_until > moment,
                    "seconds_left": round(host.ejected_until - moment, 1) if host.ejected_until > moment else 0,
                    "reason": host.reason if host.ejected_until > moment else "",
                    "ejections": host.ejected_total,
                    "multiplier": host.ejections,
                    "consecutive_5xx": host.consecutive_5xx,
                    "interval_requests": host.ok + host.failed,
                    "interval_failures": host.failed,
                }
                for name, host in self._hosts.items()
            }

    def state_of(self, deployment: str) -> dict[str, Any] | None:
        return self.status().get(deployment)

    def reset(self) -> None:
        with self._lock:
            self._hosts.clear()
            self._last_evaluation = monotonic()


outliers = OutlierDetector()
