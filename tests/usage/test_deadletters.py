"""One bad usage event never stops ingestion: the others go in, it goes to the dead letters
after a bounded number of tries, visible in the admin with its error, and replays after a fix."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from gatewaysite.clock import now
from usage.consumer import FAILURES, GROUP, drain
from usage.models import UsageDeadLetter, UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

STREAM = "{gw}:usage"


def _event(request_id: str, **record: Any) -> bytes:
    base = {
        "request_id": request_id,
        "created_at": (now() - timedelta(minutes=1)).isoformat(),
        "client_key_id": None,
        "model": "gpt-4o-mini",
        "status": "ok",
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "cost_usd": "0.0000060",
    }
    return orjson.dumps({"record": {**base, **record}, "samples": []})


@pytest.fixture
def int_columns() -> Any:
    """The token columns as they were before they became bigint: an overflow fails the insert."""
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE usage_usagerecord ADD CONSTRAINT old_int_columns CHECK (prompt_tokens <= 2147483647)"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE usage_usagerecord DROP CONSTRAINT IF EXISTS old_int_columns")


def _widen_columns() -> None:
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE usage_usagerecord DROP CONSTRAINT old_int_columns")


def test_a_poison_entry_is_isolated_retried_then_dead_lettered(
    redis_client: Any, int_columns: None, settings: Any, admin_client: Client
) -> None:
    settings.GATEWAY = {**settings.GATEWAY, "USAGE_MAX_ATTEMPTS": 3}
    good = [f"req_good{i}" for i in range(11)]
    for index, request_id in enumerate(good):
        redis_client.xadd(STREAM, {"e": _event(request_id)})
        if index == 5:  # the bad ones sit in the middle of the batch
            redis_client.xadd(STREAM, {"e": _event("req_overflow", prompt_tokens=5_000_000_000)})
            redis_client.xadd(STREAM, {"e": _event("req_negative", cost_usd="-1.00001")})
            redis_client.xadd(STREAM, {"e": b"{not json"})

    assert drain() == 11  # every ordinary entry of the batch goes in at once
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == sorted(good)
    letters = {letter.request_id: letter for letter in UsageDeadLetter.objects.all()}
    assert list(letters) == [""]  # undecodable: no retry can help, dead-lettered at once
    assert "JSONDecodeError" in letters[""].error or "unexpected" in letters[""].error.lower()
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 2  # the two bad ones wait for a retry

    assert drain(claim_idle_ms=0) == 0  # try 2
    assert UsageDeadLetter.objects.count() == 1
    assert drain(claim_idle_ms=0) == 0  # try 3: given up
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 0
    assert redis_client.xlen(STREAM) == 0
    assert not redis_client.exists(FAILURES)
    overflow = UsageDeadLetter.objects.get(request_id="req_overflow")
    negative = UsageDeadLetter.objects.get(request_id="req_negative")
    assert overflow.attempts == negative.attempts == 3
    assert "old_int_columns" in overflow.error
    assert "never negative" in negative.error
    assert orjson.loads(overflow.payload)["record"]["prompt_tokens"] == 5_000_000_000
    assert overflow.first_seen <= overflow.last_seen

    page = admin_client.get("/admin/usage/usagedeadletter/").content.decode()
    assert "req_overflow" in page and "never negative" in page
    detail = admin_client.get(f"/admin/usage/usagedeadletter/{overflow.pk}/change/").content.decode()
    assert "5000000000" in detail

    # the fix (the columns widened); then one admin action replays
    _widen_columns()
    response = admin_client.post(
        "/admin/usage/usagedeadletter/",
        {"action": "replay", "_selected_action": [overflow.pk, negative.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert "Replayed 1 dead letter" in text and "failed again" in text
    record = UsageRecord.objects.get(request_id="req_overflow")
    assert record.prompt_tokens == 5_000_000_000
    overflow.refresh_from_db()
    negative.refresh_from_db()
    assert overflow.replayed_at is not None and negative.replayed_at is None and negative.attempts == 4
    assert not UsageRecord.objects.filter(request_id="req_negative").exists()  # a negative cost never goes in

    # idempotent: replaying again changes nothing
    call_command("usage_deadletters", "replay", str(overflow.pk), stdout=StringIO())
    assert UsageRecord.objects.filter(request_id="req_overflow").count() == 1
    assert UsageRecord.objects.count() == 12


def test_the_command_lists_and_replays_every_waiting_letter(redis_client: Any, int_columns: None) -> None:
    redis_client.xadd(STREAM, {"e": _event("req_a", prompt_tokens=3_000_000_000)})
    redis_client.xadd(STREAM, {"e": _event("req_b", prompt_tokens=4_000_000_000)})
    for _ in range(3):
        drain(claim_idle_ms=0)
    assert UsageDeadLetter.objects.count() == 2
    out = StringIO()
    call_command("usage_deadletters", "list", stdout=out)
    assert "req_a" in out.getvalue() and "3 tries" in out.getvalue()
    with pytest.raises(CommandError, match="failed again"):
        call_command("usage_deadletters", "replay", "--all", stdout=StringIO(), stderr=StringIO())
    _widen_columns()
    out = StringIO()
    call_command("usage_deadletters", "replay", "--all", stdout=out)
    assert "replayed 2, failed 0" in out.getvalue()
    assert UsageRecord.objects.count() == 2
    out = StringIO()
    call_command("usage_deadletters", "replay", "--all", stdout=out)  # nothing left waiting
    assert "replayed 0, failed 0" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("usage_deadletters", "replay")


def test_an_entry_that_succeeds_on_a_retry_leaves_no_trace(redis_client: Any, int_columns: None) -> None:
    redis_client.xadd(STREAM, {"e": _event("req_late", prompt_tokens=3_000_000_000)})
    assert drain() == 0
    assert redis_client.hget(FAILURES, redis_client.xrange(STREAM)[0][0]) == b"1"
    _widen_columns()
    assert drain(claim_idle_ms=0) == 1
    assert not redis_client.exists(FAILURES)
    assert UsageDeadLetter.objects.count() == 0
