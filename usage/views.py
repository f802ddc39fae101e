"""``GET /v1/reports/costs`` (placeholder: filled in by the cost work)."""

from __future__ import annotations

from django.http import HttpResponse
from rest_framework.request import Request
from rest_framework.views import APIView

from gatewaysite.api.errors import error_response


class CostReportView(APIView):
    def get(self, request: Request) -> HttpResponse:
        return error_response(
            "Not implemented yet.", status_code=501, error_type="server_error", code="not_implemented"
        )
