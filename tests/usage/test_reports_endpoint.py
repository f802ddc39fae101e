"""Cost reports grouped by the API called (chat, messages, embeddings)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from usage.ingest import records_insert
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def staff(client: Any, django_user_model: Any, staff_groups: dict[str, Any]) -> Any:
    from rest_framework_simplejwt.tokens import RefreshToken

    user = django_user_model.objects.create_user("finance", password="pw-123456", is_staff=True)
    user.groups.add(staff_groups["finance"])
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {RefreshToken.for_user(user).access_token}"
    return client


def _record(endpoint: str, cost: str, hours: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        created_at=DAY + timedelta(hours=hours),
        client_key_id=1,
        model="m",
        status="ok",
        endpoint=endpoint,
        prompt_tokens=10,
        cost_usd=Decimal(cost),
    )


def test_group_by_endpoint(staff: Any) -> None:
    records_insert(
        [
            _record("chat", "0.1", 1),
            _record("chat", "0.2", 2),
            _record("messages", "0.000000000003", 3),
            _record("embeddings", "0.00000002", 4),
        ]
    )
    data = staff.get("/v1/reports/costs", {"start": "2026-11-01", "end": "2026-11-02", "group_by": "endpoint"}).json()
    rows = {row["endpoint"]: row for row in data["rows"]}
    assert set(rows) == {"chat", "messages", "embeddings"}
    assert rows["chat"]["requests"] == 2 and Decimal(rows["chat"]["cost_usd"]) == Decimal("0.3")
    assert Decimal(rows["embeddings"]["cost_usd"]) == Decimal("0.00000002")
    assert sum(Decimal(r["cost_usd"]) for r in data["rows"]) == Decimal(data["total"]["cost_usd"])
    detail = staff.get("/v1/reports/costs", {"start": "2026-11-01", "end": "2026-11-02", "detail": "1"})
    rows = json.loads(b"".join(detail.streaming_content))["rows"]
    assert sorted(r["endpoint"] for r in rows) == ["chat", "chat", "embeddings", "messages"]
