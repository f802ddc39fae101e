from __future__ import annotations

import os

from django.core.exceptions import ValidationError
from django.db import models


class ProviderKind(models.TextChoices):
    """The wire format an adapter speaks (providers/adapters/<kind>.py)."""

    OPENAI = "openai", "OpenAI-compatible (OpenAI, Mistral, Groq, Together, DeepSeek, OpenRouter, Ollama, vLLM)"
    AZURE = "azure", "Azure OpenAI"
    ANTHROPIC = "anthropic", "Anthropic Messages API"
    GEMINI = "gemini", "Google Gemini"
    MOCK = "mock", "Built-in mock (offline demos, staging)"


class Provider(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=ProviderKind.choices)
    vendor = models.SlugField(
        max_length=64,
        blank=True,
        help_text="Pricing vendor (e.g. openai, groq, mistral); pricing rows are matched by vendor and model. "
        "Empty: the kind.",
    )
    base_url = models.URLField(max_length=500, blank=True, help_text="e.g. https://api.openai.com/v1")
    api_key = models.CharField(max_length=500, blank=True, help_text="Write-only; never shown back.")
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="Or: the name of an environment variable holding the key."
    )
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text='Adapter options, e.g. {"api_version": "2024-10-21"} (azure), '
        '{"latency_ms": 50, "failure_rate": 0.1} (mock).',
    )
    connect_timeout = models.FloatField(default=5.0, help_text="Seconds.")
    read_timeout = models.FloatField(default=120.0, help_text="Seconds between bytes from the upstream.")
    response_timeout = models.FloatField(
        default=600.0, help_text="Seconds for a whole non-streaming response, however the bytes trickle in."
    )
    first_chunk_timeout = models.FloatField(
        default=120.0, help_text="Seconds from sending a streaming request to the stream's first event."
    )
    stream_idle_timeout = models.FloatField(default=60.0, help_text="Seconds allowed between two events of a stream.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def pricing_vendor(self) -> str:
        return self.vendor or self.kind

    def resolve_api_key(self) -> str:
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "")
        return self.api_key

    def clean(self) -> None:
        if self.kind != ProviderKind.MOCK and not self.base_url:
            raise ValidationError({"base_url": "A base URL is required for this kind of provider."})
        timeouts = ("connect_timeout", "read_timeout", "response_timeout", "first_chunk_timeout", "stream_idle_timeout")
        wrong = {name: "Timeouts must be positive (seconds)." for name in timeouts if not getattr(self, name) > 0}
        if wrong:
            raise ValidationError(wrong)


class Deployment(models.Model):
    """A public model name served by one provider's model."""

    name = models.SlugField(max_length=100, unique=True, help_text="Unique id, e.g. openai-gpt-4o.")
    model_name = models.CharField(max_length=200, db_index=True, help_text="The public name clients ask for.")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="deployments")
    provider_model = models.CharField(max_length=200, help_text="The provider's model id (Azure: deployment name).")
    weight = models.PositiveIntegerField(default=1, help_text="Share of traffic under the balanced strategy.")
    priority = models.IntegerField(default=100, help_text="Lower is tried first under the model strategy.")
    enabled = models.BooleanField(default=True)
    context_window = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens, input plus output.")
    max_output_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most output tokens one answer can have. Budgets reserve it when a request sets no max_tokens "
        "(else the context window minus the input).",
    )
    rpm_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The provider account's requests per minute for this model; at the limit the deployment is "
        "skipped. Empty: no limit.",
    )
    tpm_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The provider account's tokens per minute (input plus output) for this model; at the limit the "
        "deployment is skipped. Empty: no limit.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_name", "priority", "name"]

    def __str__(self) -> str:
        return self.name


class PricingRow(models.Model):
    """Price of one vendor's model from ``effective_from`` on. Prices are USD per million tokens.

    Rows are never edited to change a price: a new row with a later ``effective_from``
    takes over, so past requests keep the price they ran at.
    """

    vendor = models.SlugField(max_length=64)
    model = models.CharField(max_length=200)
    input_per_mtok = models.DecimalField(max_digits=16, decimal_places=6)
    output_per_mtok = models.DecimalField(max_digits=16, decimal_places=6)
    cached_input_per_mtok = models.DecimalField(
        max_digits=16, decimal_places=6, null=True, blank=True, help_text="Cache reads; empty: the input price."
    )
    cache_write_per_mtok = models.DecimalField(
        max_digits=16, decimal_places=6, null=True, blank=True, help_text="Cache writes; empty: the input price."
    )
    currency = models.CharField(max_length=3, default="USD", editable=False)
    effective_from = models.DateTimeField()
    source = models.CharField(max_length=300, blank=True, help_text="Where the price comes from, and when.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["vendor", "model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["vendor", "model", "effective_from"], name="pricing_unique_from"),
        ]

    def __str__(self) -> str:
        return f"{self.vendor}/{self.model} from {self.effective_from:%Y-%m-%d}"

    def clean(self) -> None:
        for field in ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok"):
            value = getattr(self, field)
            if value is not None and value < 0:
                raise ValidationError({field: "Prices cannot be negative."})
