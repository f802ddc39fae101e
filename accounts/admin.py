"""Client keys and teams admin.

Keys are issued with ``accounts.services.key_issue`` and revoked with ``key_revoke``, the
same services the management commands use. The secret is shown once, on the page that
answers the add form; only the prefix and an HMAC of the key are stored. Keys are never
deleted (usage records keep pointing at them): revoke them instead.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR, TO_FIELD_VAR
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from accounts.models import ClientKey, Team
from accounts.services import key_issue, key_revoke
from gatewaysite.clock import now
from routing.strategies.registry import strategy_names


def _split_models(value: str) -> list[str]:
    """``"gpt-4o, claude-3-5-sonnet"`` -> ``["gpt-4o", "claude-3-5-sonnet"]`` (order kept, no duplicates)."""
    names: list[str] = []
    for part in value.replace("\n", ",").split(","):
        name = part.strip()
        if name and name not in names:
            names.append(name)
    return names


class AllowedModelsField(forms.CharField):
    """The JSON list of public model names, edited as comma-separated text."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]  # a list where Django's CharField gives a str
        if isinstance(value, list | tuple):
            return [str(v) for v in value]
        return _split_models(super().to_python(value) or "")

    def has_changed(self, initial: Any, data: Any) -> bool:
        return list(initial or []) != self.to_python(data)


class ClientKeyForm(forms.ModelForm):
    allowed_models = AllowedModelsField(
        required=False,
        label="Allowed models",
        widget=forms.TextInput(attrs={"size": 80, "placeholder": "gpt-4o, claude-3-5-sonnet"}),
        help_text="Comma-separated public model names this key may use; empty: all models.",
    )
    strategy = forms.ChoiceField(
        required=False,
        label="Strategy override",
        help_text="Routing strategy for this key's requests; empty: the gateway's active strategy.",
    )

    class Meta:
        model = ClientKey
        fields = [
            "name",
            "owner",
            "team",
            "allowed_models",
            "strategy",
            "latency_slo_ms",
            "budget_usd",
            "budget_period",
            "budget_when_redis_down",
            "rpm_limit",
            "tpm_limit",
            "expires_at",
            "revoked",
            "metadata",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "(the gateway's active strategy)")] + [(name, name) for name in strategy_names()]
        current = self.initial.get("strategy")
        if current and current not in dict(choices):  # keep a strategy that has since been removed visible
            choices.append((current, f"{current} (unknown)"))
        strategy = self.fields["strategy"]
        assert isinstance(strategy, forms.ChoiceField)  # the model field has choices
        strategy.choices = choices
        if "budget_usd" in self.fields:
            self.fields["budget_usd"].label = "Budget (USD)"
        if "budget_when_redis_down" in self.fields:  # omitted: the default (closed)
            self.fields["budget_when_redis_down"].required = False
        if "allowed_models" in self.fields:
            from routing.config.cache import config_cache

            known = config_cache.current().models
            if known:
                self.fields["allowed_models"].help_text += " Models served now: " + ", ".join(known) + "."

    def clean_strategy(self) -> str:
        value = self.cleaned_data.get("strategy") or ""
        if value and value not in strategy_names() and value != self.initial.get("strategy"):
            raise forms.ValidationError(f"Unknown strategy; valid: {', '.join(strategy_names())}.")
        return value

    def clean_metadata(self) -> Any:
        value = self.cleaned_data.get("metadata")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError('Metadata must be a JSON object, e.g. {"service": "billing"}.')
        return value

    def clean_budget_usd(self) -> Any:
        value = self.cleaned_data.get("budget_usd")
        if value is not None and value < 0:
            raise forms.ValidationError("A budget cannot be negative.")
        return value


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "budget_usd", "budget_period", "key_count", "created_at"]
    list_filter = ["budget_period", "created_at"]
    search_fields = ["name"]
    fields = ["name", "budget_usd", "budget_period", "budget_when_redis_down", "rpm_limit", "tpm_limit", "created_at"]
    readonly_fields = ["created_at"]

    def get_form(self, request: HttpRequest, obj: Team | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if "budget_when_redis_down" in form.base_fields:  # omitted: the default (closed)
            form.base_fields["budget_when_redis_down"].required = False
        return form

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return super().get_queryset(request).annotate(key_count=Count("keys"))

    @admin.display(description="keys", ordering="key_count")
    def key_count(self, team: Team) -> int:
        return getattr(team, "key_count", 0)


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("revoked", "revoked"), ("expired", "expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ClientKey]) -> QuerySet[ClientKey]:
        moment = now()
        if self.value() == "active":
            return queryset.filter(revoked=False).exclude(expires_at__lte=moment)
        if self.value() == "revoked":
            return queryset.filter(revoked=True)
        if self.value() == "expired":
            return queryset.filter(revoked=False, expires_at__lte=moment)
        return queryset


@admin.register(ClientKey)
class ClientKeyAdmin(admin.ModelAdmin):
    form = ClientKeyForm
    list_display = [
        "name",
        "display_prefix",
        "owner",
        "team",
        "models_summary",
        "strategy",
        "budget",
        "expires_at",
        "status",
        "created_at",
    ]
    list_filter = [KeyStatusFilter, "team", "budget_period", "strategy", "created_at", "expires_at"]
    search_fields = ["name", "owner", "prefix", "team__name"]
    list_select_related = ["team"]
    date_hierarchy = "created_at"
    actions = ["revoke_selected"]
    readonly_fields = ["display_prefix", "created_at", "revoked_at"]

    add_fieldsets = [
        (None, {"fields": ["name", "owner", "team"]}),
        ("Access", {"fields": ["allowed_models", "strategy", "latency_slo_ms", "expires_at"]}),
        ("Budget", {"fields": ["budget_usd", "budget_period", "budget_when_redis_down"]}),
        ("Rate limits", {"fields": ["rpm_limit", "tpm_limit"]}),
        (
            "Metadata",
            {
                "fields": ["metadata"],
                "description": "Free-form JSON object for your own bookkeeping (service, cost centre, ...).",
            },
        ),
    ]
    change_fieldsets = [
        (None, {"fields": ["name", "display_prefix", "owner", "team", "created_at"]}),
        ("Access", {"fields": ["allowed_models", "strategy", "latency_slo_ms", "expires_at", "revoked", "revoked_at"]}),
        ("Budget", {"fields": ["budget_usd", "budget_period", "budget_when_redis_down"]}),
        ("Rate limits", {"fields": ["rpm_limit", "tpm_limit"]}),
        ("Metadata", {"fields": ["metadata"]}),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: ClientKey | None = None) -> Any:
        return self.change_fieldsets if obj is not None else self.add_fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: ClientKey | None = None) -> Any:
        fields = list(self.readonly_fields)
        if obj is not None and obj.revoked:  # revocation is final: issue a new key instead
            fields.append("revoked")
        return fields

    def get_form(self, request: HttpRequest, obj: ClientKey | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None and "revoked" in form.base_fields:
            form.base_fields["revoked"].help_text = (
                "Tick to revoke the key now; every gateway process rejects it within a second. "
                "Revocation cannot be undone."
            )
        return form

    def has_delete_permission(self, request: HttpRequest, obj: ClientKey | None = None) -> bool:
        return False

    # --- list columns ----------------------------------------------------------------

    @admin.display(description="key", ordering="prefix")
    def display_prefix(self, key: ClientKey) -> str:
        return key.display_prefix

    @admin.display(description="budget (USD)", ordering="budget_usd")
    def budget(self, key: ClientKey) -> str:
        if key.budget_usd is None:
            return "-"
        return f"{format(key.budget_usd.normalize(), 'f')} per {key.budget_period}"

    @admin.display(description="models")
    def models_summary(self, key: ClientKey) -> str:
        models = key.allowed_models or []
        if not models:
            return "all"
        shown = ", ".join(models[:3])
        return shown + (f" (+{len(models) - 3})" if len(models) > 3 else "")

    @admin.display(description="status")
    def status(self, key: ClientKey) -> str:
        if key.revoked:
            return format_html('<strong style="color:#ba2121">{}</strong>', "revoked")
        if key.expires_at is not None and key.expires_at <= now():
            return format_html('<strong style="color:#ba2121">{}</strong>', "expired")
        return "active"

    # --- writes go through the services ------------------------------------------------

    def save_model(self, request: HttpRequest, obj: ClientKey, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        if not change:
            issued, secret = key_issue(
                name=data["name"],
                owner=data.get("owner") or "",
                team=data.get("team"),
                allowed_models=data.get("allowed_models") or [],
                strategy=data.get("strategy") or "",
                budget_usd=data.get("budget_usd"),
                budget_period=data.get("budget_period") or ClientKey._meta.get_field("budget_period").default,
                budget_when_redis_down=data.get("budget_when_redis_down")
                or ClientKey._meta.get_field("budget_when_redis_down").default,
                expires_at=data.get("expires_at"),
                metadata=data.get("metadata") or {},
            )
            # The admin goes on with ``obj`` (history entry, redirects): make it the issued row.
            obj.pk = issued.pk
            obj.prefix = issued.prefix
            obj.secret_hash = issued.secret_hash
            obj.created_at = issued.created_at
            obj._state.adding = False
            obj._state.db = issued._state.db
            request._issued_key_secret = secret  # type: ignore[attr-defined]  # answered once, never stored
            return
        revoke_now = "revoked" in form.changed_data and data.get("revoked")
        if revoke_now:
            obj.revoked = False  # key_revoke sets the flag and the time
        super().save_model(request, obj, form, change)
        if revoke_now:
            key_revoke(key=obj)

    def response_add(self, request: HttpRequest, obj: ClientKey, post_url_continue: str | None = None) -> HttpResponse:
        secret = getattr(request, "_issued_key_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        opts = self.opts
        popup_response_data = ""
        if IS_POPUP_VAR in request.POST:  # issued from a related-object "+" popup (e.g. a routing rule)
            to_field = request.POST.get(TO_FIELD_VAR)
            value = obj.serializable_value(str(to_field) if to_field else obj._meta.pk.attname)
            popup_response_data = json.dumps({"value": str(value), "obj": str(obj)})
        context = {
            **self.admin_site.each_context(request),
            "title": "Client key issued",
            "subtitle": None,
            "opts": opts,
            "key": obj,
            "secret": secret,
            "change_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]),
            "changelist_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
            "add_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_add"),
            "has_view_permission": True,
            "is_popup": bool(popup_response_data),
            "popup_response_data": popup_response_data,
        }
        response = TemplateResponse(request, "admin/accounts/clientkey/key_issued.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ClientKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked=False):
            key_revoke(key=key)
            revoked += 1
        if revoked:
            self.message_user(
                request, f"Revoked {revoked} key(s); they stop working within a second.", messages.SUCCESS
            )
        else:
            self.message_user(request, "The selected keys were already revoked.", messages.INFO)
