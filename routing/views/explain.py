"""``POST /v1/routing/explain`` (placeholder: filled in by the routing work)."""

from __future__ import annotations

from django.http import HttpResponse
from rest_framework.request import Request

from gatewaysite.api.errors import error_response
from routing.views.completions import ClientKeyView


class ExplainView(ClientKeyView):
    def post(self, request: Request) -> HttpResponse:
        return error_response(
            "Not implemented yet.", status_code=501, error_type="server_error", code="not_implemented"
        )
