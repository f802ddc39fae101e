"""The usage event's typed rows match the models, and nothing misspelt goes through silently."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from routing.models import LatencySample
from usage.events import LatencySampleData, PendingEvent, UsageRecordData, decode_payload
from usage.ingest import ingest_events
from usage.models import UsageRecord

AT = datetime(2026, 11, 3, 10, 0, 7, tzinfo=UTC)


def columns(model: type) -> set[str]:
    return {f.attname for f in model._meta.concrete_fields} - {"id"}


def record(**changes: object) -> UsageRecordData:
    values: dict[str, object] = dict(
        request_id="req_typed",
        created_at=AT,
        client_key_id=None,
        key_name="k",
        key_prefix="gw_abc",
        team="red",
        provider="p1",
        deployment="d1",
        model="gpt-4o-mini",
        provider_model="gpt-4o-mini-2024",
        strategy="model",
        route_reason="only one",
        status="ok",
        http_status=200,
        error_code="",
        stream=True,
        endpoint="chat",
        attempts=1,
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=2,
        cache_creation_tokens=0,
        cache_creation_1h_tokens=0,
        usage_estimated=False,
        usage_anomaly="",
        cost_usd=Decimal("0.000001500001"),
        pricing_row_id=3,
        hedged=True,
        hedge_cost_usd=Decimal("0.0000005"),
        latency_ms=12.5,
        upstream_ms=10.25,
        ttft_ms=4.0,
    )
    values.update(changes)
    return UsageRecordData(**values)  # type: ignore[arg-type]  # the values are checked by the dataclass's own fields


def sample() -> LatencySampleData:
    return LatencySampleData(
        request_id="req_typed",
        attempt=1,
        created_at=AT,
        provider="p1",
        deployment="d1",
        model="gpt-4o-mini",
        ok=True,
        http_status=200,
        stream=True,
        total_ms=12.5,
        upstream_ms=10.25,
        ttft_ms=4.0,
        overhead_ms=2.25,
    )


def test_the_typed_rows_have_exactly_the_models_columns() -> None:
    assert {f.name for f in dataclasses.fields(UsageRecordData)} == columns(UsageRecord)
    assert {f.name for f in dataclasses.fields(LatencySampleData)} == columns(LatencySample)


def test_a_misspelt_or_missing_field_fails_where_the_event_is_built() -> None:
    with pytest.raises(TypeError, match="cost_uds"):
        record(cost_uds=Decimal(1))
    values = {f.name: None for f in dataclasses.fields(LatencySampleData)} | {"totl_ms": 1.0}
    with pytest.raises(TypeError, match="totl_ms"):
        LatencySampleData(**values)  # type: ignore[arg-type]  # the misspelling is the point
    with pytest.raises(TypeError, match="overhead_ms"):
        LatencySampleData(**{k: v for k, v in values.items() if k not in ("overhead_ms", "totl_ms")})  # type: ignore[arg-type]  # a missing field is the point


def test_the_payload_is_plain_json_with_money_as_a_string() -> None:
    data = decode_payload(PendingEvent(record=record(), samples=[sample()]).payload())
    assert data["record"]["cost_usd"] == "0.000001500001"
    assert data["record"]["created_at"] == "2026-11-03T10:00:07+00:00"
    assert data["samples"][0]["overhead_ms"] == 2.25
    assert set(data["record"]) == columns(UsageRecord)


@pytest.mark.django_db
def test_an_event_ingests_field_for_field() -> None:
    event = PendingEvent(record=record(), samples=[sample()])
    ingest_events([decode_payload(event.payload())])
    row = UsageRecord.objects.get(request_id="req_typed")
    for f in dataclasses.fields(UsageRecordData):
        assert getattr(row, f.name) == getattr(event.record, f.name), f.name
    stored = LatencySample.objects.get(request_id="req_typed")
    for f in dataclasses.fields(LatencySampleData):
        assert getattr(stored, f.name) == getattr(event.samples[0], f.name), f.name


@pytest.mark.django_db
def test_the_ingest_rejects_a_field_the_row_does_not_have_instead_of_dropping_it() -> None:
    data = decode_payload(PendingEvent(record=record(), samples=[sample()]).payload())
    data["record"]["cost_uds"] = "1"
    with pytest.raises(ValueError, match="cost_uds"):
        ingest_events([data])
    data = decode_payload(PendingEvent(record=record(), samples=[sample()]).payload())
    data["samples"][0]["ttf_ms"] = 1.0
    with pytest.raises(ValueError, match="ttf_ms"):
        ingest_events([data])
    assert not UsageRecord.objects.filter(request_id="req_typed").exists()
