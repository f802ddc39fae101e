"""Pricing rows admin: history, CSV import and export, unpriced deployments.

A row in effect, or taking effect within the notice (``GATEWAY_CONFIG_PROPAGATION_SECONDS``),
is read-only (only its ``source`` note can be edited) and cannot be deleted: requests are
billed with it. Changing a price means adding a row with a later ``effective_from`` ("Add
a new price" on the row's page pre-fills vendor and model). The add form leaves
``effective_from`` empty, meaning "now": the moment of saving plus the notice, stamped by
the service (a time typed earlier than that is refused, never silently backdated).
Saves, deletes, import and export call the same services as ``manage.py pricing``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from gatewaysite.clock import now
from providers.models import PriceRepricing, PricingRow
from providers.pricing.formats import PRICE_FIELDS, PricingFormatError, dump_csv
from providers.pricing.selectors import pricing_rows, unpriced_deployments
from providers.pricing.services import (
    PricingTimeError,
    nothing_billed,
    pricing_import_file,
    pricing_row_delete,
    pricing_row_frozen,
    pricing_row_save,
    too_early_message,
)
from routing.config.notice import earliest_effective_from, propagation_seconds


def in_effect(row: PricingRow | None) -> bool:
    """In effect or about to be (within the notice): frozen."""
    return pricing_row_frozen(row)


class PricingImportForm(forms.Form):
    file = forms.FileField(help_text="CSV or JSON (the gateway's export, or LiteLLM's price map).")


class PricingRowForm(forms.ModelForm):
    effective_from = forms.SplitDateTimeField(
        required=False,
        widget=AdminSplitDateTime,
        help_text="UTC. Empty: now, i.e. when you save plus the notice every gateway process needs to see a new "
        "price (a few seconds). Never earlier: requests already billed keep their price.",
    )

    class Meta:
        model = PricingRow
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.instance.pk and in_effect(PricingRow.objects.filter(pk=self.instance.pk).first()):
            changed = [
                name for name in PRICE_FIELDS + ["vendor", "model", "effective_from"] if name in self.changed_data
            ]
            if changed:
                raise forms.ValidationError(
                    "This price is already in effect and past requests were billed with it. "
                    "Add a new row with a later 'effective from' instead."
                )
            return data
        effective_from = data.get("effective_from")
        moment = now()
        if effective_from is not None and effective_from < earliest_effective_from(moment) and not nothing_billed():
            what = f"{data.get('vendor')}/{data.get('model')}"
            self.add_error("effective_from", too_early_message(what, effective_from, moment))
        return data


@admin.register(PricingRow)
class PricingRowAdmin(admin.ModelAdmin):
    form = PricingRowForm
    list_display = ["vendor", "model", *PRICE_FIELDS, "effective_from", "state", "source"]
    list_filter = ["vendor"]
    search_fields = ["model", "vendor"]
    date_hierarchy = None
    ordering = ["vendor", "model", "-effective_from"]
    actions = ["export_selected_csv"]
    change_list_template = "admin/providers/pricingrow/change_list.html"
    fields = ["vendor", "model", *PRICE_FIELDS, "currency", "effective_from", "source"]

    @admin.display(description="state")
    def state(self, obj: PricingRow) -> str:
        if obj.effective_from <= now():
            return "in effect / history"
        return "taking effect (frozen)" if in_effect(obj) else "scheduled"

    def get_readonly_fields(self, request: HttpRequest, obj: PricingRow | None = None) -> list[str]:
        if in_effect(obj):
            return ["vendor", "model", *PRICE_FIELDS, "currency", "effective_from"]
        return ["currency"]

    def has_delete_permission(self, request: HttpRequest, obj: PricingRow | None = None) -> bool:
        if in_effect(obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # would delete rows in effect; delete scheduled rows one by one
        return actions

    def save_model(self, request: HttpRequest, obj: PricingRow, form: Any, change: bool) -> None:
        try:
            pricing_row_save(row=obj)
        except PricingTimeError as exc:  # only if the row froze between the form's check and the save
            messages.error(request, str(exc))
            return
        if not change:
            messages.info(
                request,
                f"{obj.vendor}/{obj.model}: the new price takes effect at {obj.effective_from.isoformat()} "
                f"(at least {propagation_seconds():g} s after saving, so that every gateway process sees it first).",
            )

    def delete_model(self, request: HttpRequest, obj: PricingRow) -> None:
        try:
            pricing_row_delete(row=obj)
        except PricingTimeError as exc:
            messages.error(request, str(exc))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        row = PricingRow.objects.filter(pk=object_id).first()
        if in_effect(row):
            assert row is not None
            add_url = (
                reverse("admin:providers_pricingrow_add") + "?" + urlencode({"vendor": row.vendor, "model": row.model})
            )
            messages.info(
                request,
                format_html(
                    "This price is in effect; past requests were billed with it, so it cannot be changed. "
                    '<a href="{}">Add a new price for {}/{}</a> from a later date instead.',
                    add_url,
                    row.vendor,
                    row.model,
                ),
            )
        return super().change_view(request, object_id, form_url, extra_context)

    # --- import, export, unpriced deployments -----------------------------------------

    def get_urls(self) -> list[Any]:
        own = [
            path("import/", self.admin_site.admin_view(self.import_view), name="providers_pricingrow_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name="providers_pricingrow_export"),
            path("unpriced/", self.admin_site.admin_view(self.unpriced_view), name="providers_pricingrow_unpriced"),
        ]
        return own + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        unpriced = unpriced_deployments()
        context = {"unpriced": unpriced[:10], "unpriced_count": len(unpriced), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = PricingImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = pricing_import_file(name=upload.name, content=upload.read())
            except PricingFormatError as exc:
                form.add_error("file", str(exc))
            else:
                messages.success(request, f"{upload.name}: {result.summary()}.")
                for line in result.conflicts[:20]:
                    messages.warning(request, f"Refused: {line}")
                for line in result.skipped[:20]:
                    messages.warning(request, f"Skipped: {line}")
                return HttpResponseRedirect(reverse("admin:providers_pricingrow_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import prices",
            "form": form,
        }
        return TemplateResponse(request, "admin/providers/pricingrow/import_form.html", context)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        return self._csv_response(pricing_rows())

    def unpriced_view(self, request: HttpRequest) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Deployments without a price",
            "deployments": unpriced_deployments(),
        }
        return TemplateResponse(request, "admin/providers/pricingrow/unpriced.html", context)

    @admin.action(description="Export selected rows as CSV", permissions=["view"])
    def export_selected_csv(self, request: HttpRequest, queryset: QuerySet[PricingRow]) -> HttpResponse:
        return self._csv_response(queryset.order_by("vendor", "model", "effective_from"))

    def _csv_response(self, rows: Any) -> HttpResponse:
        response = HttpResponse(dump_csv(rows), content_type="text/csv; charset=utf-8")
        response["content-disposition"] = f'attachment; filename="pricing_{now():%Y%m%d}.csv"'
        return response


@admin.register(PriceRepricing)
class PriceRepricingAdmin(admin.ModelAdmin):
    """The audit trail of ``manage.py pricing reprice``: read-only."""

    list_display = ["created_at", "actor", "reason", "records_recosted", "cost_before_usd", "cost_after_usd"]
    readonly_fields = [f.name for f in PriceRepricing._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: PriceRepricing | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: PriceRepricing | None = None) -> bool:
        return False
