"""Latency samples, rollups and the latency chart admin.

Both tables are high-volume and written only by the usage pipeline: their pages are
read-only (no add, change or delete), skip the full unfiltered count and filter only on
low-cardinality columns. The rollup list opens with a chart of p50/p95 per deployment
(``Latency rollups`` > ``Latency chart`` for the ranges), drawn as inline SVG from the
rollups (usage/latency/chart.py).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from usage.latency.chart import DEFAULT_RANGE, latency_chart
from usage.latency.histogram import histogram_from
from usage.models import LatencyRollup, LatencySample


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LatencySample)
class LatencySampleAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "request_id",
        "attempt",
        "provider",
        "deployment",
        "model",
        "ok",
        "http_status",
        "stream",
        "upstream_ms",
        "ttft_ms",
        "overhead_ms",
        "total_ms",
    ]
    list_filter = ["ok", "stream"]
    search_fields = ["=request_id", "=deployment", "=provider"]
    ordering = ["-created_at"]


def _percentile(obj: LatencyRollup, q: float) -> float | None:
    value = histogram_from([obj.histogram]).percentile(q, low=obj.min_ms, high=obj.max_ms)
    return round(value, 1) if value is not None else None


@admin.register(LatencyRollup)
class LatencyRollupAdmin(ReadOnlyAdmin):
    list_display = [
        "minute",
        "deployment",
        "provider",
        "count",
        "error_count",
        "avg_ms",
        "p50",
        "p95",
        "p99",
        "ttft_p50",
    ]
    search_fields = ["=deployment", "=provider"]
    ordering = ["-minute"]
    change_list_template = "admin/usage/latencyrollup/change_list.html"

    @admin.display(description="avg ms")
    def avg_ms(self, obj: LatencyRollup) -> float | None:
        ok = obj.count - obj.error_count
        return round(obj.sum_ms / ok, 1) if ok else None

    @admin.display(description="p50 ms")
    def p50(self, obj: LatencyRollup) -> float | None:
        return _percentile(obj, 0.50)

    @admin.display(description="p95 ms")
    def p95(self, obj: LatencyRollup) -> float | None:
        return _percentile(obj, 0.95)

    @admin.display(description="p99 ms")
    def p99(self, obj: LatencyRollup) -> float | None:
        return _percentile(obj, 0.99)

    @admin.display(description="TTFT p50 ms")
    def ttft_p50(self, obj: LatencyRollup) -> float | None:
        value = histogram_from([obj.ttft_histogram]).percentile(0.5, low=obj.ttft_min_ms, high=obj.ttft_max_ms)
        return round(value, 1) if value is not None else None

    def get_urls(self) -> list[URLPattern]:
        chart = path(
            "chart/",
            self.admin_site.admin_view(self.chart_view),
            name="usage_latencyrollup_chart",
        )
        return [chart, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "chart": latency_chart(range_name=DEFAULT_RANGE)}
        return super().changelist_view(request, extra_context)

    def chart_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Latency per deployment",
            "chart": latency_chart(range_name=request.GET.get("range", DEFAULT_RANGE)),
        }
        return TemplateResponse(request, "admin/usage/latencyrollup/chart.html", context)
