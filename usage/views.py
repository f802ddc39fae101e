"""``GET /v1/reports/costs``: finance's cost report. Shape and parameters: docs/cost.md.

A staff JWT with ``usage.view_cost_reports`` (the ``finance`` group) is required.
"""

from __future__ import annotations

from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from gatewaysite.api.permissions import StaffPermission
from usage.reports import (
    ReportParams,
    cost_report,
    detail_csv,
    detail_json,
    parse_report_params,
    range_total,
    records_between,
    report_csv,
    report_json,
)


def _filename(params: ReportParams, suffix: str) -> str:
    return f"costs_{params.start:%Y%m%d}_{params.end:%Y%m%d}.{suffix}"


class CostReportView(APIView):
    permission_classes = [StaffPermission]
    required_permissions = {"GET": ("usage.view_cost_reports",)}

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[JSONRenderer, str]:
        # ``format`` is this report's own parameter (json or csv), not DRF's renderer override.
        return JSONRenderer(), "application/json"

    def get(self, request: Request) -> HttpResponseBase:
        params = parse_report_params(request.query_params)
        if params.row_level:
            records = records_between(params.start, params.end)
            total = range_total(params.start, params.end)
            if params.format == "csv":
                response: HttpResponseBase = StreamingHttpResponse(
                    detail_csv(records, total if params.totals else None), content_type="text/csv; charset=utf-8"
                )
                response["content-disposition"] = f'attachment; filename="{_filename(params, "csv")}"'
            else:
                response = StreamingHttpResponse(detail_json(records, total, params), content_type="application/json")
            return response
        report = cost_report(params)
        if params.format == "csv":
            response = HttpResponse(report_csv(report, totals=params.totals), content_type="text/csv; charset=utf-8")
            response["content-disposition"] = f'attachment; filename="{_filename(params, "csv")}"'
            return response
        return HttpResponse(report_json(report), content_type="application/json")
