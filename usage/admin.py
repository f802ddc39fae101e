"""Usage records admin: read-only and cheap on a table of millions of rows.

No add, change or delete. The list joins the key in the same query
(``list_select_related``), shows copied names (no per-row lookups), takes the
unfiltered count from Postgres' statistics on a large table, and filters on indexed or
low-cardinality columns. The export action streams the selected records as CSV, pure data
like ``/v1/reports/costs`` (sums right in a spreadsheet or pandas).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.functional import cached_property

from gatewaysite.api.errors import InvalidRequest
from gatewaysite.clock import now
from usage.cost import format_usd
from usage.deadletters import deadletter_replay
from usage.models import UsageDeadLetter, UsageRecord
from usage.reports import (
    GROUPS,
    cost_report,
    detail_csv,
    parse_report_params,
    range_total,
    records_between,
    report_csv,
    report_json,
)


class CostReportForm(forms.Form):
    start = forms.DateTimeField(help_text="UTC, e.g. 2026-11-01 or 2026-11-01 00:00")
    end = forms.DateTimeField(help_text="Exclusive.")
    group_by = forms.MultipleChoiceField(
        choices=[(g, g) for g in GROUPS], required=False, widget=forms.CheckboxSelectMultiple
    )
    format = forms.ChoiceField(choices=[("csv", "CSV"), ("json", "JSON")])
    detail = forms.BooleanField(required=False, help_text="Every record (streamed), not grouped totals.")
    totals = forms.BooleanField(
        required=False,
        help_text="CSV: add a TOTAL line at the end (for reading by eye; a spreadsheet sum would then count it twice).",
    )


class EstimatedCountPaginator(Paginator):
    """Unfiltered, a large table is counted by Postgres' statistics, not by a full COUNT(*)."""

    ESTIMATE_ABOVE = 100_000

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if isinstance(rows, QuerySet) and not rows.query.where and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [rows.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > self.ESTIMATE_ABOVE:
                return int(row[0])
        return super().count


class StatusFilter(admin.SimpleListFilter):
    """Fixed choices: the default filter would run SELECT DISTINCT over the whole table."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("ok", "ok"), ("error", "error"), ("truncated", "truncated"), ("client_closed", "client closed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        return queryset.filter(status=self.value()) if self.value() else queryset


class AnomalyFilter(admin.SimpleListFilter):
    """Records whose provider reported implausible usage (billed as the gateway's estimate)."""

    title = "upstream usage anomaly"
    parameter_name = "anomaly"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "yes"), ("no", "no")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        if self.value() == "yes":
            return queryset.exclude(usage_anomaly="")
        if self.value() == "no":
            return queryset.filter(usage_anomaly="")
        return queryset


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
    list_filter = [StatusFilter, "stream", "usage_estimated", AnomalyFilter]
    search_fields = ["=request_id", "=key_prefix", "key_name"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 100
    ordering = ["-created_at"]
    actions = ["export_csv"]
    change_list_template = "admin/usage/usagerecord/change_list.html"

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: UsageRecord) -> str:
        return format_usd(obj.cost_usd)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def has_cost_reports_permission(self, request: HttpRequest) -> bool:
        """Cost reports and exports: ``usage.view_cost_reports`` (the ``finance`` group), not only ``view``."""
        return request.user.has_perm("usage.view_cost_reports")

    @admin.action(description="Export selected records as CSV", permissions=["cost_reports"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> StreamingHttpResponse:
        records = UsageRecord.objects.filter(pk__in=queryset.values("pk"))
        response = StreamingHttpResponse(detail_csv(records), content_type="text/csv")
        response["content-disposition"] = f'attachment; filename="usage_{now():%Y%m%d_%H%M%S}.csv"'
        return response

    def get_urls(self) -> list[Any]:
        own = [path("report/", self.admin_site.admin_view(self.report_view), name="usage_usagerecord_report")]
        return own + super().get_urls()

    def report_view(self, request: HttpRequest) -> HttpResponseBase:
        """The finance report of ``GET /v1/reports/costs``, from a form."""
        if not self.has_cost_reports_permission(request):
            raise PermissionDenied
        form = CostReportForm(request.GET or None)
        if form.is_valid():
            data = form.cleaned_data
            query = {
                "start": data["start"].isoformat(),
                "end": data["end"].isoformat(),
                "group_by": ",".join(data["group_by"]),
                "format": data["format"],
                "detail": "1" if data["detail"] else "",
                "totals": "1" if data["totals"] else "",
            }
            try:
                params = parse_report_params(query)
            except InvalidRequest as exc:
                form.add_error(None, str(exc.detail))
            else:
                name = f"costs_{params.start:%Y%m%d}_{params.end:%Y%m%d}"
                if params.row_level:
                    records = records_between(params.start, params.end)
                    total = range_total(params.start, params.end) if params.totals else None
                    response: HttpResponseBase = StreamingHttpResponse(
                        detail_csv(records, total), content_type="text/csv"
                    )
                    response["content-disposition"] = f'attachment; filename="{name}.csv"'
                    return response
                report = cost_report(params)
                if params.format == "csv":
                    response = HttpResponse(report_csv(report, totals=params.totals), content_type="text/csv")
                    response["content-disposition"] = f'attachment; filename="{name}.csv"'
                else:
                    response = HttpResponse(report_json(report), content_type="application/json")
                    response["content-disposition"] = f'attachment; filename="{name}.json"'
                return response
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Cost report",
            "form": form,
        }
        return TemplateResponse(request, "admin/usage/usagerecord/report_form.html", context)


class ReplayedFilter(admin.SimpleListFilter):
    title = "replayed"
    parameter_name = "replayed"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "waiting"), ("yes", "replayed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageDeadLetter]) -> QuerySet[UsageDeadLetter]:
        if self.value() in ("yes", "no"):
            return queryset.filter(replayed_at__isnull=self.value() == "no")
        return queryset


@admin.register(UsageDeadLetter)
class UsageDeadLetterAdmin(admin.ModelAdmin):
    """Usage events the consumer gave up on, with the error; "Replay" ingests them again after a fix."""

    list_display = ["last_seen", "request_id", "attempts", "short_error", "replayed_at"]
    list_filter = [ReplayedFilter]
    search_fields = ["=request_id", "=stream_id"]
    readonly_fields = [
        "stream_id",
        "request_id",
        "error",
        "attempts",
        "first_seen",
        "last_seen",
        "replayed_at",
        "payload",
    ]
    ordering = ["-last_seen"]
    actions = ["replay"]

    @admin.display(description="error")
    def short_error(self, obj: UsageDeadLetter) -> str:
        return obj.error if len(obj.error) <= 120 else obj.error[:119] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageDeadLetter | None = None) -> bool:
        return False

    @admin.action(description="Replay selected dead letters (ingest them again)", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[UsageDeadLetter]) -> None:
        outcome = deadletter_replay(ids=queryset.values_list("pk", flat=True))
        if outcome.replayed:
            self.message_user(request, f"Replayed {len(outcome.replayed)} dead letter(s).", messages.SUCCESS)
        for pk, error in outcome.failed.items():
            self.message_user(request, f"Dead letter {pk} failed again: {error}", messages.ERROR)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("usage.delete_usagedeadletter")
