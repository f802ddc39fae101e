"""Pricing rows admin: history, CSV import and export, unpriced deployments.

A row already in effect is read-only (only its ``source`` note can be edited) and cannot
be deleted: past requests were priced with it. Changing a price means adding a row with a
later ``effective_from`` ("Add a new price" on the row's page pre-fills vendor and model).
Import and export call the same services as ``manage.py pricing``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from gatewaysite.clock import now
from providers.models import PricingRow
from providers.pricing.formats import PRICE_FIELDS, PricingFormatError, dump_csv
from providers.pricing.selectors import pricing_rows, unpriced_deployments
from providers.pricing.services import pricing_import_file


def in_effect(row: PricingRow | None) -> bool:
    return row is not None and row.pk is not None and row.effective_from <= now()


class PricingImportForm(forms.Form):
    file = forms.FileField(help_text="CSV or JSON (the gateway's export, or LiteLLM's price map).")


class PricingRowForm(forms.ModelForm):
    class Meta:
        model = PricingRow
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        data = super().clean()
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
        return "in effect / history" if in_effect(obj) else "scheduled"

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

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("effective_from", now())
        return initial

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
