"""Providers and deployments admin.

A provider's ``api_key`` is write-only here: the form shows an empty password input
(blank keeps the stored key, a checkbox clears it), no page or list renders it, and the
add/change views mark it sensitive so error reports never carry it.
"""

from __future__ import annotations

import os
import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Case, CharField, Count, Exists, F, OuterRef, QuerySet, When
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from gatewaysite.clock import now
from providers.models import Deployment, PricingRow, Provider

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def with_priced(queryset: QuerySet[Deployment]) -> QuerySet[Deployment]:
    """Annotate ``priced``: a pricing row for (provider's pricing vendor, provider model) is in effect now."""
    vendor = Case(
        When(provider__vendor="", then=F("provider__kind")), default=F("provider__vendor"), output_field=CharField()
    )
    rows = PricingRow.objects.filter(
        vendor=OuterRef("pricing_vendor"), model=OuterRef("provider_model"), effective_from__lte=now()
    )
    return queryset.alias(pricing_vendor=vendor).annotate(priced=Exists(rows))


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(
        required=False,
        assume_scheme="https",
        max_length=500,
        widget=forms.URLInput(attrs={"size": 60}),
        help_text=Provider._meta.get_field("base_url").help_text,
    )
    api_key = forms.CharField(
        required=False,
        strip=True,
        label="API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password", "size": 60}),
        help_text="Write-only: never shown again. Leave blank to keep the current key.",
    )
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored API key")

    class Meta:
        model = Provider
        fields = [
            "name",
            "kind",
            "vendor",
            "base_url",
            "api_key",
            "clear_api_key",
            "api_key_env",
            "options",
            "connect_timeout",
            "read_timeout",
            "response_timeout",
            "first_chunk_timeout",
            "stream_idle_timeout",
            "enabled",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial.pop("api_key", None)  # nothing to render back, even by accident
        if "api_key_env" in self.fields:
            self.fields["api_key_env"].label = "API key environment variable"

    def clean_api_key(self) -> str:
        typed = self.cleaned_data.get("api_key") or ""
        if typed:
            return typed
        return self.instance.api_key if self.instance.pk else ""

    def clean_api_key_env(self) -> str:
        name = (self.cleaned_data.get("api_key_env") or "").strip()
        if name and not _ENV_NAME.match(name):
            raise forms.ValidationError("An environment variable name: letters, digits and underscores.")
        return name

    def clean_options(self) -> Any:
        value = self.cleaned_data.get("options")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError('Options must be a JSON object, e.g. {"api_version": "2024-10-21"}.')
        return value

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("clear_api_key"):
            if self.data.get(self.add_prefix("api_key")):
                self.add_error("clear_api_key", "Either type a new key or remove the stored one, not both.")
            data["api_key"] = ""
        return data


class DeploymentInline(admin.TabularInline):
    model = Deployment
    extra = 0
    fields = [
        "name",
        "model_name",
        "provider_model",
        "priced",
        "enabled",
        "weight",
        "priority",
        "context_window",
        "max_output_tokens",
        "rpm_limit",
        "tpm_limit",
    ]
    readonly_fields = ["priced"]
    show_change_link = True

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and db_field.name in self.fields:  # keep the row within the page width
            width = "5em" if isinstance(field, forms.IntegerField) else "11em"
            field.widget.attrs["style"] = f"width: {width}"
        return field

    def get_queryset(self, request: HttpRequest) -> QuerySet[Deployment]:
        return with_priced(super().get_queryset(request))

    @admin.display(description="priced", boolean=True)
    def priced(self, deployment: Deployment) -> bool | None:
        return getattr(deployment, "priced", None) if deployment.pk else None


@method_decorator(sensitive_post_parameters("api_key"), name="changeform_view")
@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "kind", "vendor", "base_url", "credentials", "deployment_count", "enabled"]
    list_filter = ["kind", "vendor", "enabled"]
    search_fields = ["name", "vendor", "base_url"]
    readonly_fields = ["credentials", "created_at", "updated_at"]
    inlines = [DeploymentInline]
    actions = ["enable_selected", "disable_selected"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "vendor", "base_url", "enabled"]}),
        (
            "Credentials",
            {
                "fields": ["credentials", "api_key", "clear_api_key", "api_key_env"],
                "description": "Store a key here (write-only) or name an environment variable that holds it; "
                "the variable wins when both are set.",
            },
        ),
        (
            "Connection",
            {
                "fields": [
                    "options",
                    "connect_timeout",
                    "read_timeout",
                    "response_timeout",
                    "first_chunk_timeout",
                    "stream_idle_timeout",
                ],
                "description": "Seconds. A slow upstream gets 504 upstream_timeout (and the next deployment is "
                "tried) once a deadline passes: read = between two reads, response = a whole non-streaming "
                "answer, first chunk = a stream's first event, stream idle = between two stream events.",
            },
        ),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).annotate(deployment_count=Count("deployments"))

    def get_fieldsets(self, request: HttpRequest, obj: Provider | None = None) -> Any:
        if obj is None:  # no stored key to clear yet
            return [
                (name, {**opts, "fields": [f for f in opts["fields"] if f not in ("clear_api_key", "credentials")]})
                for name, opts in self.fieldsets
                if name != "History"
            ]
        return self.fieldsets

    @admin.display(description="key source")
    def credentials(self, provider: Provider) -> str:
        """Where the key comes from; never the key itself."""
        if provider.api_key_env:
            present = "set" if os.environ.get(provider.api_key_env) else "NOT set in this process"
            suffix = " (a stored key is also present)" if provider.api_key else ""
            return f"environment variable {provider.api_key_env} ({present}){suffix}"
        if provider.api_key:
            return "stored key (hidden)"
        return "none"

    @admin.display(description="deployments", ordering="deployment_count")
    def deployment_count(self, provider: Provider) -> int:
        return getattr(provider, "deployment_count", 0)

    def save_model(self, request: HttpRequest, obj: Provider, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if obj.api_key_env and not os.environ.get(obj.api_key_env):
            self.message_user(
                request,
                f"The environment variable {obj.api_key_env} is not set in this process; "
                "calls to this provider will have no key until it is.",
                messages.WARNING,
            )

    @admin.action(description="Enable selected providers", permissions=["change"])
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset.filter(enabled=False):
            provider.enabled = True
            provider.save(update_fields=["enabled", "updated_at"])

    @admin.action(description="Disable selected providers", permissions=["change"])
    def disable_selected(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset.filter(enabled=True):
            provider.enabled = False
            provider.save(update_fields=["enabled", "updated_at"])


class PricedFilter(admin.SimpleListFilter):
    title = "priced"
    parameter_name = "priced"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No (cost unknown)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> QuerySet[Deployment]:
        if self.value() == "yes":
            return queryset.filter(priced=True)  # type: ignore[misc]  # "priced" is with_priced's annotation, which the stubs cannot see on QuerySet[Deployment]
        if self.value() == "no":
            return queryset.filter(priced=False)  # type: ignore[misc]  # "priced" is with_priced's annotation, which the stubs cannot see on QuerySet[Deployment]
        return queryset


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "model_name",
        "endpoint",
        "provider",
        "priced",
        "enabled",
        "provider_model",
        "weight",
        "priority",
        "context_window",
    ]
    list_filter = ["endpoint", "provider", "model_name", "enabled", PricedFilter, "provider__kind"]
    search_fields = ["name", "model_name", "provider_model", "provider__name"]
    list_select_related = ["provider"]
    autocomplete_fields = ["provider"]
    readonly_fields = ["priced", "created_at", "updated_at"]
    actions = ["enable_selected", "disable_selected"]
    fieldsets = [
        (None, {"fields": ["name", "model_name", "endpoint", "provider", "provider_model", "enabled"]}),
        ("Routing", {"fields": ["weight", "priority", "context_window", "max_output_tokens"]}),
        ("Provider rate limits", {"fields": ["rpm_limit", "tpm_limit"]}),
        ("Pricing", {"fields": ["priced"]}),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Deployment]:
        return with_priced(super().get_queryset(request))

    def get_fieldsets(self, request: HttpRequest, obj: Deployment | None = None) -> Any:
        if obj is None:
            return [fs for fs in self.fieldsets if fs[0] not in ("Pricing", "History")]
        return self.fieldsets

    @admin.display(description="priced", boolean=True, ordering="priced")
    def priced(self, deployment: Deployment) -> bool:
        return bool(getattr(deployment, "priced", False))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        unpriced = with_priced(Deployment.objects.filter(enabled=True)).filter(priced=False).count()  # type: ignore[misc]  # "priced" is with_priced's annotation, which the stubs cannot see on QuerySet[Deployment]
        if unpriced and request.method == "GET":
            self.message_user(
                request,
                f"{unpriced} enabled deployment(s) have no price in effect: their requests are recorded "
                "with an unknown cost. Add pricing rows for them (filter: priced = No).",
                messages.WARNING,
            )
        return super().changelist_view(request, extra_context)

    @admin.action(description="Enable selected deployments", permissions=["change"])
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        for deployment in queryset.filter(enabled=False):
            deployment.enabled = True
            deployment.save(update_fields=["enabled", "updated_at"])

    @admin.action(description="Disable selected deployments", permissions=["change"])
    def disable_selected(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        for deployment in queryset.filter(enabled=True):
            deployment.enabled = False
            deployment.save(update_fields=["enabled", "updated_at"])
