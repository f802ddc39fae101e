"""Usage records admin: read-only and cheap on a table of millions of rows.

No add, change or delete. The list joins the key in the same query
(``list_select_related``), shows copied names (no per-row lookups), skips the full
unfiltered count, and filters on indexed or low-cardinality columns. The export action
streams the selected records as CSV with a TOTAL line, like ``/v1/reports/costs``.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse

from gatewaysite.clock import now
from usage.cost import format_usd
from usage.models import UsageRecord
from usage.reports import detail_csv, report_total


class StatusFilter(admin.SimpleListFilter):
    """Fixed choices: the default filter would run SELECT DISTINCT over the whole table."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("ok", "ok"), ("error", "error"), ("client_closed", "client closed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        return queryset.filter(status=self.value()) if self.value() else queryset


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "request_id",
        "key_name",
        "team",
        "provider",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "latency_ms",
    ]
    list_select_related = ["client_key"]
    list_filter = [StatusFilter, "stream", "usage_estimated"]
    search_fields = ["=request_id", "=key_prefix", "key_name"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    list_per_page = 100
    ordering = ["-created_at"]
    actions = ["export_csv"]

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: UsageRecord) -> str:
        return format_usd(obj.cost_usd)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    @admin.action(description="Export selected records as CSV (with total)", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> StreamingHttpResponse:
        records = UsageRecord.objects.filter(pk__in=queryset.values("pk"))
        response = StreamingHttpResponse(detail_csv(records, report_total(records)), content_type="text/csv")
        response["content-disposition"] = f'attachment; filename="usage_{now():%Y%m%d_%H%M%S}.csv"'
        return response
