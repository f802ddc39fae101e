from __future__ import annotations

from django.db import models


class UsageRecord(models.Model):
    """What one client request used and cost. Exactly one row per ``request_id``.

    On Postgres the table is partitioned by month on ``created_at`` (usage/partitions.py),
    and a unique constraint on a partitioned table must hold the partition key: the
    constraint is ``(request_id, created_at)``. ``created_at`` is the moment in the usage
    event, set once by the gateway when the request arrived, so every redelivery, spool
    replay or dead-letter replay of an event carries the same pair and lands on the
    same row (docs/scaling.md, "Exactly once with partitions").

    Names (key, team, provider, deployment, model) are copied, not only linked, so a
    report of last year still reads right after a provider is renamed or deleted.
    ``cost_usd`` is NULL when no price was known: unknown, never zero.
    """

    request_id = models.CharField(max_length=40, db_index=True)
    created_at = models.DateTimeField(db_index=True)
    client_key = models.ForeignKey(
        "accounts.ClientKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    key_name = models.CharField(max_length=100, blank=True)
    key_prefix = models.CharField(max_length=16, blank=True)
    team = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    deployment = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200)
    provider_model = models.CharField(max_length=200, blank=True)
    strategy = models.CharField(max_length=40, blank=True)
    route_reason = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, help_text="ok, error or client_closed.")
    http_status = models.PositiveSmallIntegerField(default=200)
    error_code = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    endpoint = models.CharField(
        max_length=16, default="chat", help_text="The API called: chat (completions), messages or embeddings."
    )
    attempts = models.PositiveSmallIntegerField(default=1)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_1h_tokens = models.PositiveBigIntegerField(
        default=0, help_text="The part of the cache writes written to a one-hour cache (priced apart)."
    )
    usage_estimated = models.BooleanField(
        default=False, help_text="Tokens counted by the gateway (the stream ended before the provider's usage)."
    )
    usage_anomaly = models.CharField(
        max_length=500,
        blank=True,
        help_text="What the provider reported that was implausible (raw values); the tokens and cost are then "
        "the gateway's estimate.",
    )
    cost_usd = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    pricing_row_id = models.BigIntegerField(null=True, blank=True)
    hedged = models.BooleanField(
        default=False, help_text="A second copy was sent (hedged request); cost_usd includes both attempts."
    )
    hedge_cost_usd = models.DecimalField(
        max_digits=24,
        decimal_places=12,
        null=True,
        blank=True,
        help_text="The part of cost_usd the attempt that did not serve the answer cost (real or estimated).",
    )
    latency_ms = models.FloatField(default=0)
    upstream_ms = models.FloatField(default=0)
    ttft_ms = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["request_id", "created_at"], name="usage_record_once")]
        indexes = [
            models.Index(fields=["client_key", "created_at"]),
            models.Index(fields=["team", "created_at"]),
        ]
        # Cost reports (``/v1/reports/costs``, the admin's report and export) show every
        # key's spend: a permission of their own, apart from browsing records.
        permissions = [("view_cost_reports", "Can view cost reports")]

    def __str__(self) -> str:
        return self.request_id


class UsageRollup(models.Model):
    """Usage of one UTC hour per (key, team, provider, deployment, model, endpoint): the one home of rollups.

    Kept exact by construction: the consumer adds a record to its hour's row in the
    transaction that inserts the record, and only when the insert really inserted it
    (a replay that hits the unique constraint adds nothing), so every row equals the sum
    of its raw records to the last decimal, late records included. Re-pricing and
    ``manage.py usage_rollups rebuild`` recompute hours from the raw records.
    ``client_key_id`` is 0 for records without a key (a unique key of plain columns
    behaves the same on Postgres and SQLite). ``cost_usd`` sums the priced records only;
    ``requests - unpriced_requests`` of them.
    """

    hour = models.DateTimeField()
    client_key_id = models.BigIntegerField(default=0)
    key_name = models.CharField(max_length=100, blank=True)
    key_prefix = models.CharField(max_length=16, blank=True)
    team = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    deployment = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=16, default="chat")
    requests = models.PositiveBigIntegerField(default=0)
    unpriced_requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_1h_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=30, decimal_places=12, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "hour",
                    "client_key_id",
                    "key_name",
                    "key_prefix",
                    "team",
                    "provider",
                    "deployment",
                    "model",
                    "endpoint",
                ],
                name="usage_rollup_cell",
            )
        ]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.key_name} {self.model}"


class UsageDeadLetter(models.Model):
    """A usage event the consumer could not ingest after ``GATEWAY_USAGE_MAX_ATTEMPTS`` tries.

    It left the stream (so the events after it are ingested) and waits here, raw, with
    the last error, until an operator replays it after a fix (admin action or
    ``manage.py usage_deadletters replay``). Replaying is idempotent: the record's
    ``request_id`` is unique.
    """

    stream_id = models.CharField(max_length=40, unique=True, help_text="The entry's id in the usage stream.")
    request_id = models.CharField(max_length=40, blank=True, db_index=True)
    payload = models.TextField(help_text="The event exactly as it was in the stream.")
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    replayed_at = models.DateTimeField(null=True, blank=True, help_text="When a replay ingested it.")

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return self.request_id or self.stream_id
