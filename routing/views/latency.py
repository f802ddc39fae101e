"""``GET /v1/routing/latency``: latency statistics per provider and deployment.

Query parameter ``window`` (``15m``, ``1h``, ``24h``, ``7d``; default ``1h``): how far
back, in whole minutes. Figures come from the per-minute rollups (docs/latency.md); a
key limited to some models sees only their deployments.
"""

from __future__ import annotations

import re
from datetime import timedelta

import orjson
from django.http import HttpResponse
from rest_framework.request import Request

from accounts.authentication import client_key
from gatewaysite.api.errors import InvalidRequest
from gatewaysite.clock import now
from routing.config.cache import config_cache
from routing.latency.live import live_latency
from routing.latency.selectors import latency_report
from routing.outlier import outliers
from routing.views.completions import ClientKeyView

DEFAULT_WINDOW = "1h"
MAX_WINDOW = timedelta(days=90)
_WINDOW = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_window(value: str) -> timedelta:
    match = _WINDOW.match(value.strip())
    if match is None:
        raise InvalidRequest(
            f"Invalid window {value!r}: use a number and a unit m, h or d, e.g. 15m, 1h, 24h, 7d.",
            code="invalid_window",
            param="window",
        )
    window = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if window > MAX_WINDOW:
        raise InvalidRequest("The window may be at most 90d.", code="invalid_window", param="window")
    return window


class LatencyView(ClientKeyView):
    def get(self, request: Request) -> HttpResponse:
        window_text = request.query_params.get("window") or DEFAULT_WINDOW
        window = parse_window(window_text)
        until = now()
        since = until - window
        snapshot = config_cache.current()
        models = {name: info.model_name for name, info in snapshot.deployments_by_name.items()}
        key = client_key(request)
        allowed = None
        if key.allowed_models:
            allowed = [name for name, model in models.items() if key.may_use(model)]
        providers = latency_report(since=since, deployments=allowed, models=models)
        live = live_latency.live()
        p95 = live_latency.quantiles(0.95, stream=False, recent=snapshot.settings.slo_min_samples)
        ttft_p95 = live_latency.quantiles(0.95, stream=True, recent=snapshot.settings.slo_min_samples)
        ejections = outliers.status()
        for provider in providers:
            for item in provider["deployments"]:
                name = item["deployment"]
                stat = live.get(name)
                item["live"] = (
                    {
                        "mean_ms": round(stat.mean_ms, 3),
                        "samples": stat.samples,
                        "errors": stat.errors,
                        "p95_ms": round(p95[name].ms, 3) if name in p95 else None,
                        "ttft_p95_ms": round(ttft_p95[name].ms, 3) if name in ttft_p95 else None,
                    }
                    if stat
                    else None
                )
                state = ejections.get(name)
                item["outlier"] = state or {"ejected": False, "ejections": 0}
        body = {
            "object": "routing.latency",
            "window": window_text.strip(),
            "since": since.isoformat(),
            "until": until.isoformat(),
            "providers": providers,
        }
        return HttpResponse(orjson.dumps(body), content_type="application/json")
