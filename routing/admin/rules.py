"""Routing rules and routing settings admin, and the rule tester.

Rules are the ``custom`` strategy's (routing/strategies/custom.py). The rule tester
(``Routing rules`` > ``Rule tester``) runs the same explain service as
``POST /v1/routing/explain`` on a pasted chat completion body and a chosen key: it shows
which rule matches, which deployments would be tried and in what order, without calling
any provider.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounts.models import ClientKey
from gatewaysite.api.errors import GatewayError
from providers.models import Deployment
from routing.models import RoutingRule, RoutingSettings, RuleAction, RuleTarget
from routing.strategies.registry import strategy_names

SAMPLE_BODY = """{
  "model": "gpt-4o-mini",
  "messages": [{"role": "user", "content": "Hello"}],
  "metadata": {"tier": "gold"}
}"""


def _rule_strategy_choices() -> list[tuple[str, str]]:
    return [("", "(none: route to the listed deployments)")] + [
        (name, name) for name in strategy_names() if name != "custom"
    ]


class RoutingRuleForm(forms.ModelForm):
    strategy = forms.ChoiceField(
        required=False,
        help_text="For the 'strategy' action: the strategy that orders the listed deployments "
        "(all of the model's deployments when none are listed).",
    )

    class Meta:
        model = RoutingRule
        fields = "__all__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = _rule_strategy_choices()
        current = self.initial.get("strategy")
        if current and current not in dict(choices):
            choices.append((current, f"{current} (unknown)"))
        strategy = self.fields["strategy"]
        assert isinstance(strategy, forms.ChoiceField)  # declared as one above
        strategy.choices = choices

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if not name.isprintable():  # the name goes out in the x-gateway-route-reason header
            raise forms.ValidationError("Use printable characters only (no line breaks or tabs).")
        return name

    def clean_priority(self) -> int:
        priority = self.cleaned_data["priority"]
        clash = RoutingRule.objects.filter(priority=priority).exclude(pk=self.instance.pk).first()
        if clash is not None:
            raise forms.ValidationError(
                f"Priority {priority} is already used by the rule '{clash.name}'. Two rules cannot share a "
                "priority: the order of evaluation would be ambiguous. Pick another number (lower is evaluated first)."
            )
        return priority

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("action") == RuleAction.ROUTE and data.get("strategy"):
            self.add_error(
                "strategy", "Leave the strategy empty for the 'route' action, or choose the 'strategy' action."
            )
        return data


class RuleTargetFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        listed = [
            form.cleaned_data["deployment"]
            for form in self.forms
            if form.cleaned_data.get("deployment") and not form.cleaned_data.get("DELETE")
        ]
        if self.instance.action == RuleAction.ROUTE and not listed:
            raise forms.ValidationError("A 'route' rule needs at least one deployment to route to.")
        if len({d.pk for d in listed}) != len(listed):
            raise forms.ValidationError("A deployment is listed twice.")


class RuleTargetInline(admin.TabularInline):
    model = RuleTarget
    formset = RuleTargetFormSet
    fields = ["position", "deployment"]
    ordering = ["position", "id"]
    extra = 1
    verbose_name = "deployment"
    verbose_name_plural = "deployments (tried in this order: lower position first)"

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "deployment":
            kwargs["queryset"] = Deployment.objects.select_related("provider").order_by("model_name", "name")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    form = RoutingRuleForm
    inlines = [RuleTargetInline]
    list_display = ["priority", "name", "enabled", "conditions", "action_summary"]
    list_display_links = ["priority", "name"]
    list_filter = ["enabled", "action"]
    search_fields = ["name", "description", "model_pattern"]
    list_select_related = ["client_key", "team"]
    ordering = ["priority"]
    fieldsets = [
        (None, {"fields": ["name", "priority", "enabled", "description"]}),
        (
            "Conditions (all that are set must hold; empty ones match anything)",
            {
                "fields": [
                    "model_pattern",
                    ("client_key", "team"),
                    ("header_name", "header_value"),
                    ("metadata_key", "metadata_value"),
                    "stream",
                    ("min_input_tokens", "max_input_tokens"),
                ]
            },
        ),
        ("Action", {"fields": ["action", "strategy"]}),
        ("Latency objective and hedging", {"fields": ["latency_slo_ms", "hedge", "hedge_delay_ms"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RoutingRule]:
        return super().get_queryset(request).prefetch_related("targets__deployment")

    @admin.display(description="when")
    def conditions(self, rule: RoutingRule) -> str:
        parts = []
        if rule.model_pattern:
            parts.append(f"model {rule.model_pattern}")
        if rule.client_key_id:
            parts.append(f"key {rule.client_key}")
        if rule.team_id:
            parts.append(f"team {rule.team}")
        if rule.header_name:
            parts.append(f"header {rule.header_name}={rule.header_value or '*'}")
        if rule.metadata_key:
            parts.append(f"metadata {rule.metadata_key}={rule.metadata_value or '*'}")
        if rule.stream is not None:
            parts.append("streaming" if rule.stream else "not streaming")
        if rule.min_input_tokens is not None or rule.max_input_tokens is not None:
            parts.append(f"input tokens {rule.min_input_tokens or 0}..{rule.max_input_tokens or '∞'}")
        return "; ".join(parts) or "always"

    @admin.display(description="then")
    def action_summary(self, rule: RoutingRule) -> str:
        targets = [t.deployment.name for t in sorted(rule.targets.all(), key=lambda t: (t.position, t.id))]
        if rule.action == RuleAction.STRATEGY:
            return f"{rule.strategy} over {', '.join(targets) if targets else 'all deployments'}"
        return " → ".join(targets) or "(no deployments)"

    # --- the rule tester ------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        tester = path(
            "tester/",
            self.admin_site.admin_view(self.tester_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_tester",
        )
        return [tester, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "tester_url": reverse("admin:routing_routingrule_tester")}
        return super().changelist_view(request, extra_context)

    def tester_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise DjangoPermissionDenied
        result: dict[str, Any] | None = None
        error = ""
        form = RuleTesterForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            result, error = form.explain()
        context = {
            **self.admin_site.each_context(request),
            "title": "Rule tester",
            "subtitle": None,
            "opts": self.opts,
            "form": form,
            "result": result,
            "result_json": json.dumps(result, indent=2, default=str) if result is not None else "",
            "error": error,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/routing/routingrule/tester.html", context)


class RuleTesterForm(forms.Form):
    key = forms.ModelChoiceField(
        queryset=ClientKey.objects.select_related("team").order_by("name"),
        help_text="The client key the request is sent with (its team, allowed models and strategy apply).",
    )
    body = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 90, "style": "font-family: monospace"}),
        initial=SAMPLE_BODY,
        help_text="A chat completion request body, as a client would POST it to /v1/chat/completions.",
    )
    headers = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 90, "style": "font-family: monospace"}),
        help_text="Request headers, one 'Name: value' per line (for header conditions).",
    )
    strategy = forms.ChoiceField(
        required=False,
        initial="custom",
        help_text="The strategy to explain with; 'as in force' uses the key's or the gateway's.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        strategy = self.fields["strategy"]
        assert isinstance(strategy, forms.ChoiceField)  # declared as one above
        strategy.choices = [("", "(as in force for this key)")] + [(n, n) for n in strategy_names()]

    def clean_body(self) -> dict[str, Any]:
        from routing.services.validation import validate_chat_body

        try:
            body = orjson.loads(self.cleaned_data["body"])
        except orjson.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        try:
            return validate_chat_body(body)
        except GatewayError as exc:
            raise forms.ValidationError(str(exc.detail)) from None

    def clean_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for number, line in enumerate((self.cleaned_data.get("headers") or "").splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise forms.ValidationError(f"Line {number}: write 'Name: value'.")
            headers[name.strip().lower()] = value.strip()
        return headers

    def explain(self) -> tuple[dict[str, Any] | None, str]:
        """The explain result, or an error message (unknown model, model not allowed for the key)."""
        from accounts.keycache import key_cache
        from routing.config.cache import config_cache
        from routing.services.explain import explain_route_request, routing_explain

        data = self.cleaned_data
        key = key_cache.lookup(data["key"].prefix)
        if key is None:
            return None, "The key could not be loaded."
        route = explain_route_request(
            body=data["body"],
            key=key,
            snapshot=config_cache.current(),
            headers=data["headers"],
            strategy=data.get("strategy") or None,
        )
        try:
            return routing_explain(route=route), ""
        except GatewayError as exc:
            return None, str(exc.detail)


@admin.register(RoutingSettings)
class RoutingSettingsAdmin(admin.ModelAdmin):
    """One row (pk=1): the active strategy, fallback attempts and cooldown."""

    list_display = ["strategy", "allow_request_strategy", "max_attempts", "cooldown_failures", "cooldown_seconds"]
    fieldsets = [
        ("Strategy", {"fields": ["strategy", "allow_request_strategy"]}),
        ("Fallback and health", {"fields": ["max_attempts", "cooldown_failures", "cooldown_seconds"]}),
        (
            "Cost under a latency objective (cost-slo)",
            {"fields": ["latency_slo_ms", "allow_request_latency_slo", "slo_min_samples", "slo_explore_percent"]},
        ),
        ("Hedged requests", {"fields": ["hedge_enabled", "hedge_delay_ms", "hedge_budget_percent"]}),
        (
            "Outlier ejection",
            {
                "fields": [
                    "outlier_enabled",
                    "outlier_interval_seconds",
                    "outlier_consecutive_5xx",
                    ("outlier_base_ejection_seconds", "outlier_max_ejection_seconds"),
                    "outlier_max_ejection_percent",
                    "outlier_success_rate_stdev_factor",
                    "outlier_failure_percentage_threshold",
                    "outlier_latency_factor",
                    ("outlier_minimum_hosts", "outlier_request_volume"),
                    "live_state",
                ]
            },
        ),
    ]
    readonly_fields = ["live_state"]

    @admin.display(description="state in this process")
    def live_state(self, obj: RoutingSettings) -> str:
        """Ejections, in-flight counts and the hedge budget as this admin process sees them."""
        from django.utils.html import format_html_join

        from routing.inflight import in_flight
        from routing.outlier import outliers
        from routing.services.hedging import budget

        rows = [
            (
                name,
                "ejected" if state["ejected"] else "in rotation",
                f"{state['reason']} {state['seconds_left']} s left" if state["ejected"] else "",
                state["ejections"],
            )
            for name, state in sorted(outliers.status().items())
        ]
        busy = ", ".join(f"{name}: {sum(c)}" for name, c in sorted(in_flight.counts().items())) or "none"
        table = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html(
            "<table><tr><th>deployment</th><th>state</th><th>why</th><th>ejections</th></tr>{}</table>"
            "<p>In flight (all processes): {}</p><p>Hedge budget: {}</p>",
            table,
            busy,
            str(budget.status()),
        )

    def get_form(
        self, request: HttpRequest, obj: RoutingSettings | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if "strategy" in form.base_fields:
            form.base_fields["strategy"] = forms.ChoiceField(
                choices=[(name, name) for name in strategy_names()],
                help_text="Every gateway process follows a change within a second.",
            )
        return form

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the single row is created on first use

    def has_delete_permission(self, request: HttpRequest, obj: RoutingSettings | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        from routing.services.settings import routing_settings_get

        settings = routing_settings_get()
        return HttpResponseRedirect(reverse("admin:routing_routingsettings_change", args=[settings.pk]))
