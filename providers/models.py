from __future__ import annotations

import os

from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator
from django.db import models

from providers.fields import EncryptedTextField


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
    api_key = EncryptedTextField(
        blank=True,
        validators=[MaxLengthValidator(500)],
        help_text="Write-only; never shown back. Encrypted at rest (providers/encryption.py).",
    )
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


class DeploymentEndpoint(models.TextChoices):
    """What a deployment serves. A public model name serves one of them: all its deployments agree."""

    CHAT = "chat", "Chat (/v1/chat/completions, /v1/messages)"
    EMBEDDINGS = "embeddings", "Embeddings (/v1/embeddings)"


# Provider kinds whose adapter can call an embeddings endpoint (providers/adapters/*.embed).
EMBEDDING_KINDS = ("openai", "azure", "gemini", "mock")


class Deployment(models.Model):
    """A public model name served by one provider's model."""

    name = models.SlugField(max_length=100, unique=True, help_text="Unique id, e.g. openai-gpt-4o.")
    model_name = models.CharField(max_length=200, db_index=True, help_text="The public name clients ask for.")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="deployments")
    provider_model = models.CharField(max_length=200, help_text="The provider's model id (Azure: deployment name).")
    weight = models.PositiveIntegerField(default=1, help_text="Share of traffic under the balanced strategy.")
    priority = models.IntegerField(default=100, help_text="Lower is tried first under the model strategy.")
    endpoint = models.CharField(
        max_length=16,
        choices=DeploymentEndpoint.choices,
        default=DeploymentEndpoint.CHAT,
        help_text="What this deployment serves: chat (chat completions and messages) or embeddings.",
    )
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

    def clean(self) -> None:
        kind = self.provider.kind if self.provider_id is not None else None
        if self.endpoint == DeploymentEndpoint.EMBEDDINGS and kind is not None and kind not in EMBEDDING_KINDS:
            raise ValidationError(
                {"endpoint": f"Providers of kind {kind!r} do not serve embeddings through the gateway."}
            )
        if self.model_name:
            other = (
                Deployment.objects.filter(model_name=self.model_name)
                .exclude(pk=self.pk)
                .exclude(endpoint=self.endpoint)
                .values_list("name", flat=True)
                .first()
            )
            if other is not None:
                raise ValidationError(
                    {
                        "endpoint": f"The model {self.model_name!r} is already served as another endpoint by "
                        f"deployment {other!r}; a public model name serves chat or embeddings, not both."
                    }
                )


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
        max_digits=16,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Cache writes (Anthropic: five-minute writes); empty: the input price.",
    )
    cache_write_1h_per_mtok = models.DecimalField(
        max_digits=16,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="One-hour cache writes (Anthropic ttl 1h); empty: the cache-write price.",
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
        for field in (
            "input_per_mtok",
            "output_per_mtok",
            "cached_input_per_mtok",
            "cache_write_per_mtok",
            "cache_write_1h_per_mtok",
        ):
            value = getattr(self, field)
            if value is not None and value < 0:
                raise ValidationError({field: "Prices cannot be negative."})


class PriceRepricing(models.Model):
    """The audit entry of one explicit re-pricing: backdated rows and the usage records re-costed.

    The only way to give a price an ``effective_from`` in the past (``manage.py pricing
    reprice``): it adds the rows and re-costs every recorded request they apply to, and
    this entry says who did it, why, and by how much the records' total changed.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=150)
    reason = models.TextField()
    rows = models.JSONField(default=list, help_text="The pricing rows added (vendor, model, effective_from, id).")
    records_recosted = models.PositiveIntegerField(default=0)
    cost_before_usd = models.DecimalField(max_digits=24, decimal_places=12, default=0)
    cost_after_usd = models.DecimalField(max_digits=24, decimal_places=12, default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"re-pricing {self.created_at:%Y-%m-%d %H:%M} by {self.actor}"
