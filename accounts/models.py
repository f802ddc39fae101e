from __future__ import annotations

from django.db import models


class BudgetPeriod(models.TextChoices):
    DAY = "day", "per day (UTC)"
    MONTH = "month", "per month (UTC)"


class BudgetOutagePolicy(models.TextChoices):
    CLOSED = "closed", "refuse (503 budget_unavailable)"
    OPEN = "open", "serve within a small allowance per server process"


def _rpm_field() -> models.PositiveIntegerField:
    return models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute (sliding 60 s window); empty: no limit."
    )


def _tpm_field() -> models.PositiveIntegerField:
    return models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Tokens per minute, input plus output (sliding 60 s window); empty: no limit.",
    )


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    rpm_limit = _rpm_field()
    tpm_limit = _tpm_field()
    budget_usd = models.DecimalField(
        max_digits=18, decimal_places=6, null=True, blank=True, help_text="Spend limit in USD; empty: no limit."
    )
    budget_period = models.CharField(max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    budget_when_redis_down = models.CharField(
        max_length=8,
        choices=BudgetOutagePolicy.choices,
        default=BudgetOutagePolicy.CLOSED,
        help_text="What requests get while the shared budget counters (Redis) cannot be reached.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ClientKey(models.Model):
    """An API key issued to a client application.

    The secret is never stored: only ``prefix`` (to find the row) and ``secret_hash``,
    an HMAC-SHA256 of the whole key with the server-side pepper (``KEY_PEPPER``).
    """

    name = models.CharField(max_length=100, help_text="What the key is for, e.g. 'billing-service prod'.")
    owner = models.CharField(max_length=200, blank=True, help_text="Person or service responsible.")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT, related_name="keys")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    allowed_models = models.JSONField(
        default=list, blank=True, help_text='Public model names this key may use, e.g. ["gpt-4o"]; empty: all.'
    )
    strategy = models.CharField(
        max_length=40, blank=True, help_text="Routing strategy for this key; empty: the gateway's active strategy."
    )
    latency_slo_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Latency objective (p95 ms) for the cost-slo strategy; empty: the gateway's."
    )
    budget_usd = models.DecimalField(
        max_digits=18, decimal_places=6, null=True, blank=True, help_text="Spend limit in USD; empty: no limit."
    )
    budget_period = models.CharField(max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    budget_when_redis_down = models.CharField(
        max_length=8,
        choices=BudgetOutagePolicy.choices,
        default=BudgetOutagePolicy.CLOSED,
        help_text="What requests get while the shared budget counters (Redis) cannot be reached.",
    )
    rpm_limit = _rpm_field()
    tpm_limit = _tpm_field()
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    metadata = models.JSONField(default=dict, blank=True)
    # Rotation: the secret it replaced stays valid until ``previous_secret_expires_at`` (grace period).
    previous_secret_hash = models.CharField(max_length=64, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "client API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix})"

    @property
    def display_prefix(self) -> str:
        from accounts.keys import KEY_MARK

        return f"{KEY_MARK}{self.prefix}..."
