from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models


class ConfigVersion(models.Model):
    """One row whose ``version`` rises with every configuration change.

    Each gateway process polls it (routing/config/cache.py) and reloads its in-process
    snapshot of keys, providers, deployments, pricing and rules when it moves. The bump
    runs inside the writer's transaction, so readers never see a version whose data is
    not committed yet.
    """

    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)


class RoutingSettings(models.Model):
    """The gateway-wide routing settings (a single row, pk=1)."""

    strategy = models.CharField(max_length=40, default="model")
    allow_request_strategy = models.BooleanField(
        default=False, help_text="Let clients choose a strategy per request with the x-gateway-strategy header."
    )
    max_attempts = models.PositiveIntegerField(
        default=3, help_text="Deployments tried per request, fallbacks included."
    )
    cooldown_failures = models.PositiveIntegerField(
        default=3, help_text="Consecutive failures after which a deployment is cooled down."
    )
    cooldown_seconds = models.FloatField(default=30.0)
    # cost under a latency objective (routing/strategies/cost_slo.py)
    latency_slo_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Latency objective of the cost-slo strategy (p95 ms; time to first token for streams). "
        "A rule's or a key's objective takes precedence; empty: none (cost-slo is then plain cost).",
    )
    allow_request_latency_slo = models.BooleanField(
        default=False, help_text="Let clients set the objective per request with the x-gateway-latency-slo-ms header."
    )
    slo_min_samples = models.PositiveIntegerField(
        default=10, help_text="Recent samples a deployment needs before its p95 is trusted (fewer: it is explored)."
    )
    slo_explore_percent = models.FloatField(
        default=2.0, help_text="Share of requests (%) sent to deployments being explored (too few samples, or cheaper)."
    )
    # hedged requests (routing/services/hedging.py)
    hedge_enabled = models.BooleanField(
        default=False, help_text="Send a second copy of a request that has produced no byte after the hedge delay."
    )
    hedge_delay_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Fixed hedge delay; empty: the chosen deployment's live p95."
    )
    hedge_budget_percent = models.FloatField(
        default=10.0, help_text="Extra upstream requests hedging may add, in % of requests (per process)."
    )
    # outlier ejection (routing/outlier.py); Envoy's outlier detection is the model
    outlier_enabled = models.BooleanField(default=False, help_text="Eject deployments that stand out from their peers.")
    outlier_interval_seconds = models.FloatField(default=10.0, help_text="How often the detectors judge.")
    outlier_consecutive_5xx = models.PositiveIntegerField(
        default=5, help_text="Consecutive upstream 5xx/gateway errors that eject at once (0: off)."
    )
    outlier_base_ejection_seconds = models.FloatField(
        default=30.0, help_text="Ejection time, multiplied by the number of times the deployment was ejected."
    )
    outlier_max_ejection_seconds = models.FloatField(default=300.0)
    outlier_max_ejection_percent = models.PositiveIntegerField(
        default=10, help_text="At most this share of a model's deployments ejected at once (always at least one)."
    )
    outlier_success_rate_stdev_factor = models.FloatField(
        default=1.9, help_text="Eject below mean success rate minus this many standard deviations (0: off)."
    )
    outlier_failure_percentage_threshold = models.PositiveIntegerField(
        default=85, help_text="Eject at this failure percentage or above (0: off)."
    )
    outlier_latency_factor = models.FloatField(
        default=0.0, help_text="Eject when the mean latency is this many times the peers' median (0: off)."
    )
    outlier_minimum_hosts = models.PositiveIntegerField(
        default=5, help_text="Deployments of the model with enough requests before the peer detectors judge."
    )
    outlier_request_volume = models.PositiveIntegerField(
        default=100, help_text="Requests a deployment needs in an interval to be judged against its peers."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "routing settings"
        verbose_name_plural = "routing settings"

    def __str__(self) -> str:
        return f"active strategy: {self.strategy}"

    def clean(self) -> None:
        from routing.strategies.registry import strategy_names

        if self.strategy not in strategy_names():
            raise ValidationError({"strategy": f"Unknown strategy; valid: {', '.join(strategy_names())}."})
        if self.max_attempts < 1:
            raise ValidationError({"max_attempts": "At least one attempt."})
        errors = {}
        for name in ("slo_explore_percent", "hedge_budget_percent", "outlier_max_ejection_percent"):
            if not 0 <= getattr(self, name) <= 100:
                errors[name] = "A percentage between 0 and 100."
        if self.outlier_failure_percentage_threshold > 100:
            errors["outlier_failure_percentage_threshold"] = "A percentage between 0 and 100."
        for name in ("outlier_interval_seconds", "outlier_base_ejection_seconds", "outlier_max_ejection_seconds"):
            if not getattr(self, name) > 0:
                errors[name] = "More than zero seconds."
        for name in ("outlier_success_rate_stdev_factor", "outlier_latency_factor"):
            if getattr(self, name) < 0:
                errors[name] = "Zero (off) or more."
        if self.slo_min_samples < 1:
            errors["slo_min_samples"] = "At least one sample."
        if errors:
            raise ValidationError(errors)


class RuleAction(models.TextChoices):
    ROUTE = "route", "route to the listed deployments, in order"
    STRATEGY = "strategy", "apply a strategy to the listed deployments (all of the model's if none listed)"


class RoutingRule(models.Model):
    """A prioritized rule of the ``custom`` strategy. Empty conditions match anything."""

    name = models.CharField(max_length=100, unique=True)
    priority = models.IntegerField(unique=True, help_text="Lower is evaluated first; two rules cannot share one.")
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    # conditions
    model_pattern = models.CharField(max_length=200, blank=True, help_text="Model name or glob, e.g. gpt-4*.")
    client_key = models.ForeignKey(
        "accounts.ClientKey", null=True, blank=True, on_delete=models.CASCADE, related_name="routing_rules"
    )
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="routing_rules"
    )
    header_name = models.CharField(max_length=100, blank=True, help_text="Request header that must be present.")
    header_value = models.CharField(max_length=200, blank=True, help_text="Its value (glob); empty: any value.")
    metadata_key = models.CharField(max_length=100, blank=True, help_text="Key in the request's metadata object.")
    metadata_value = models.CharField(max_length=200, blank=True, help_text="Its value (glob); empty: any value.")
    stream = models.BooleanField(null=True, blank=True, help_text="Streaming requests only / non-streaming only.")
    min_input_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_input_tokens = models.PositiveIntegerField(null=True, blank=True)
    # action
    action = models.CharField(max_length=16, choices=RuleAction.choices, default=RuleAction.ROUTE)
    strategy = models.CharField(max_length=40, blank=True, help_text="For the 'strategy' action.")
    latency_slo_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Latency objective (p95 ms) for the cost-slo strategy under this rule."
    )
    hedge = models.BooleanField(
        null=True, blank=True, help_text="Hedge requests this rule routes; empty: as the routing settings say."
    )
    hedge_delay_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Hedge delay for this rule; empty: the settings' (or the live p95)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority"]

    def __str__(self) -> str:
        return f"{self.priority}: {self.name}"

    def clean(self) -> None:
        from routing.strategies.registry import strategy_names

        if self.action == RuleAction.STRATEGY:
            valid = [name for name in strategy_names() if name != "custom"]
            if self.strategy not in valid:
                raise ValidationError({"strategy": f"Choose one of: {', '.join(valid)}."})
        if (
            self.min_input_tokens is not None
            and self.max_input_tokens is not None
            and self.min_input_tokens > self.max_input_tokens
        ):
            raise ValidationError("min_input_tokens is above max_input_tokens.")
        if (self.header_value and not self.header_name) or (self.metadata_value and not self.metadata_key):
            raise ValidationError("A value condition needs its header name / metadata key.")


class RuleTarget(models.Model):
    rule = models.ForeignKey(RoutingRule, on_delete=models.CASCADE, related_name="targets")
    deployment = models.ForeignKey("providers.Deployment", on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["rule", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["rule", "deployment"], name="rule_target_unique")]

    def __str__(self) -> str:
        return f"{self.rule_id} -> {self.deployment_id}"


class LatencySample(models.Model):
    """One upstream attempt's timings. Raw rows are pruned; rollups are kept."""

    request_id = models.CharField(max_length=40)
    attempt = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(db_index=True)
    provider = models.CharField(max_length=64)
    deployment = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    ok = models.BooleanField(default=True)
    http_status = models.PositiveSmallIntegerField(default=200)
    stream = models.BooleanField(default=False)
    total_ms = models.FloatField(help_text="Gateway received request -> last byte sent.")
    upstream_ms = models.FloatField(help_text="Upstream call, connect to last byte.")
    ttft_ms = models.FloatField(null=True, blank=True, help_text="Streams: first token from the upstream.")
    overhead_ms = models.FloatField(help_text="total minus upstream: what the gateway added.")

    class Meta:
        # Partitioned by day on Postgres (usage/partitions.py): the unique key holds the
        # partition key; ``created_at`` comes from the usage event, so a replay hits it.
        constraints = [
            models.UniqueConstraint(fields=["request_id", "attempt", "created_at"], name="latency_sample_once")
        ]
        indexes = [models.Index(fields=["deployment", "created_at"])]


class LatencyRollup(models.Model):
    """Per deployment per minute: count, sum, min, max and a histogram for percentiles."""

    deployment = models.CharField(max_length=100)
    provider = models.CharField(max_length=64)
    minute = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    sum_ms = models.FloatField(default=0)
    min_ms = models.FloatField(null=True)
    max_ms = models.FloatField(null=True)
    histogram = models.JSONField(default=list)
    ttft_count = models.PositiveIntegerField(default=0)
    ttft_sum_ms = models.FloatField(default=0)
    ttft_min_ms = models.FloatField(null=True)
    ttft_max_ms = models.FloatField(null=True)
    ttft_histogram = models.JSONField(default=list)
    overhead_sum_ms = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "minute"], name="latency_rollup_unique")]
        indexes = [models.Index(fields=["minute"])]
