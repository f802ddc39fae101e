"""``/metrics``, ``/healthz`` (liveness) and ``/readyz`` (readiness). Plain Django views: no auth classes, no DRF."""

from __future__ import annotations

import orjson
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from gatewaysite.api.errors import error_response
from monitoring.access import metrics_allowed
from monitoring.exposition import render
from monitoring.readiness import readiness


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return error_response(
            "Metrics need the metrics token (Authorization: Bearer ...) or an allowed network.",
            status_code=403,
            error_type="permission_error",
            code="metrics_forbidden",
        )
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Touches nothing else (a restart would not fix a database outage)."""
    return HttpResponse(b'{"status":"ok"}', content_type="application/json")


def readyz(request: HttpRequest) -> HttpResponse:
    ready, body = readiness()
    return HttpResponse(orjson.dumps(body), status=200 if ready else 503, content_type="application/json")
