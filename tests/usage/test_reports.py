"""``GET /v1/reports/costs`` and the admin export: totals reconcile with the records exactly."""

from __future__ import annotations

import csv
import io
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.http import StreamingHttpResponse

from usage.ingest import records_insert
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 1, tzinfo=UTC)


def _record(
    at: datetime, cost: str | None, *, key: int = 1, team: str = "", provider: str = "up", model: str = "gpt-4o"
) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        created_at=at,
        client_key_id=key,
        key_name=f"key{key}",
        key_prefix=f"p{key}",
        team=team,
        provider=provider,
        model=model,
        status="ok",
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=Decimal(cost) if cost is not None else None,
    )


@pytest.fixture
def records() -> list[UsageRecord]:
    rows = [
        _record(DAY + timedelta(hours=1), "0.000000000001", key=1, team="a"),
        _record(DAY + timedelta(hours=2), "0.333333333333", key=1, team="a", model="gpt-4o-mini"),
        _record(DAY + timedelta(hours=3), "1.000000000007", key=2, team="b", provider="other"),
        _record(DAY + timedelta(days=1, hours=1), "0.1", key=2, team="b"),
        _record(DAY + timedelta(days=1, hours=2), None, key=3),  # unpriced: unknown, counted apart
        _record(DAY + timedelta(days=2), "5", key=1),  # == end: excluded
        _record(DAY - timedelta(seconds=1), "7", key=1),  # before start: excluded
    ]
    return records_insert(rows)


@pytest.fixture
def staff(client: Any, django_user_model: Any, staff_groups: dict[str, Any]) -> Any:
    from rest_framework_simplejwt.tokens import RefreshToken

    user = django_user_model.objects.create_user("finance", password="pw-123456", is_staff=True)
    user.groups.add(staff_groups["finance"])
    token = str(RefreshToken.for_user(user).access_token)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def _get(client: Any, **params: str) -> Any:
    return client.get("/v1/reports/costs", params)


def test_grouped_totals_reconcile_to_the_last_picodollar(staff: Any, records: list[UsageRecord]) -> None:
    data = _get(staff, start="2026-11-01", end="2026-11-03", group_by="day,key").json()
    included = [r for r in records if DAY <= r.created_at < DAY + timedelta(days=2)]
    expected = sum((r.cost_usd for r in included if r.cost_usd is not None), Decimal(0))
    assert expected == Decimal("1.433333333341")
    assert Decimal(data["total"]["cost_usd"]) == expected
    assert sum(Decimal(r["cost_usd"]) for r in data["rows"] if r["cost_usd"] is not None) == expected
    assert data["total"]["requests"] == 5 and data["total"]["unpriced_requests"] == 1
    # key 3's only request has no price: its cost is unknown (null), not zero, and counted as unpriced
    unknown = data["rows"][-1]
    assert (unknown["client_key_id"], unknown["cost_usd"], unknown["unpriced_requests"]) == (3, None, 1)
    assert [(r["day"], r["client_key_id"]) for r in data["rows"]] == [
        ("2026-11-01", 1),
        ("2026-11-01", 2),
        ("2026-11-02", 2),
        ("2026-11-02", 3),
    ]
    first = data["rows"][0]
    assert first["cost_usd"] == "0.333333333334" and first["key_name"] == "key1" and first["requests"] == 2


@pytest.mark.parametrize("group_by", ["team", "provider", "model", "team,provider,model", "day"])
def test_every_grouping_sums_to_the_total(staff: Any, records: list[UsageRecord], group_by: str) -> None:
    data = _get(staff, start="2026-11-01T00:00:00Z", end="2026-11-03T00:00:00Z", group_by=group_by).json()
    assert (
        sum(Decimal(r["cost_usd"]) for r in data["rows"] if r["cost_usd"] is not None)
        == Decimal(data["total"]["cost_usd"])
        == Decimal("1.433333333341")
    )
    assert sum(r["requests"] for r in data["rows"]) == 5


def test_csv_report_is_pure_data_with_a_total_line_on_request(staff: Any, records: list[UsageRecord]) -> None:
    response = _get(staff, start="2026-11-01", end="2026-11-03", group_by="provider", format="csv")
    assert response["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(response.content.decode())))
    assert lines[0] == [
        "provider",
        "requests",
        "unpriced_requests",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_creation_tokens",
        "cache_creation_1h_tokens",
        "cost_usd",
    ]
    # Summing the whole cost column (what a spreadsheet or pandas does) gives the total once.
    assert [line[0] for line in lines[1:]] == ["other", "up"]
    assert sum(Decimal(line[-1]) for line in lines[1:] if line[-1]) == Decimal("1.433333333341")
    with_total = _get(staff, start="2026-11-01", end="2026-11-03", group_by="provider", format="csv", totals="1")
    lines = list(csv.reader(io.StringIO(with_total.content.decode())))
    body, total = lines[1:-1], lines[-1]
    assert total[0] == "TOTAL" and Decimal(total[-1]) == Decimal("1.433333333341")
    assert sum(Decimal(line[-1]) for line in body) == Decimal(total[-1])
    assert _get(staff, start="2026-11-01", end="2026-11-03", totals="maybe").json()["error"]["param"] == "totals"


def test_row_level_export_streams_every_record_and_the_total(staff: Any, records: list[UsageRecord]) -> None:
    response = _get(staff, start="2026-11-01", end="2026-11-03", format="csv", detail="1")
    assert isinstance(response, StreamingHttpResponse)
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert lines[0][0] == "request_id" and len(lines) == 1 + 5  # pure data by default
    cost = lines[0].index("cost_usd")
    assert sum(Decimal(line[cost]) for line in lines[1:] if line[cost]) == Decimal("1.433333333341")
    key_id = lines[0].index("client_key_id")
    assert all(str(int(line[key_id])) == line[key_id] for line in lines[1:])  # ids stay integers
    response = _get(staff, start="2026-11-01", end="2026-11-03", format="csv", detail="1", totals="1")
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert lines[-1][0] == "TOTAL" and len(lines) == 1 + 5 + 1
    assert (
        sum(Decimal(line[cost]) for line in lines[1:-1] if line[cost])
        == Decimal(lines[-1][cost])
        == Decimal("1.433333333341")
    )
    assert lines[-1][lines[0].index("cache_creation_tokens")] == "0"  # totalled, not left empty
    json_response = _get(staff, start="2026-11-01", end="2026-11-03")  # no group_by: the records themselves
    assert isinstance(json_response, StreamingHttpResponse)
    import json

    data = json.loads(b"".join(json_response.streaming_content))
    assert len(data["rows"]) == 5 and data["total"]["cost_usd"] == "1.433333333341"
    assert {r["cost_usd"] for r in data["rows"]} >= {"0.000000000001", None}


def _bulk(n: int) -> None:
    at = DAY + timedelta(hours=1)
    records_insert([_record(at, "0.000001") for _ in range(n)])


def _peak_while_streaming(client: Any) -> tuple[int, int]:
    response = _get(client, start="2026-11-01", end="2026-11-02", format="csv", detail="1")
    assert isinstance(response, StreamingHttpResponse)
    tracemalloc.start()
    lines = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return lines, peak


def test_row_level_export_runs_in_bounded_memory(staff: Any) -> None:
    """The export is generated lazily over a server-side cursor: 10x the rows, not 10x the memory."""
    _bulk(2_000)
    small_lines, small_peak = _peak_while_streaming(staff)
    _bulk(18_000)
    big_lines, big_peak = _peak_while_streaming(staff)
    assert (small_lines, big_lines) == (2_001, 20_001)  # header + records (no TOTAL line by default)
    assert big_peak < 3 * small_peak, (small_peak, big_peak)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"start": "2026-11-01"},
        {"start": "yesterday", "end": "2026-11-02"},
        {"start": "2026-11-02", "end": "2026-11-01"},
        {"start": "2026-11-01", "end": "2026-11-02", "group_by": "planet"},
        {"start": "2026-11-01", "end": "2026-11-02", "format": "xml"},
        {"start": "2026-02-30", "end": "2026-03-02"},
    ],
)
def test_bad_parameters_are_400(staff: Any, params: dict[str, str]) -> None:
    response = _get(staff, **params)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_reports_need_a_staff_jwt(client: Any, django_user_model: Any, issue_key: Any) -> None:
    from rest_framework_simplejwt.tokens import RefreshToken

    assert _get(client, start="2026-11-01", end="2026-11-02").status_code == 401
    _, secret = issue_key()
    assert (
        client.get(
            "/v1/reports/costs", {"start": "2026-11-01", "end": "2026-11-02"}, HTTP_AUTHORIZATION=f"Bearer {secret}"
        ).status_code
        == 401
    )
    user = django_user_model.objects.create_user("someone", password="pw-123456")
    token = str(RefreshToken.for_user(user).access_token)
    response = client.get(
        "/v1/reports/costs", {"start": "2026-11-01", "end": "2026-11-02"}, HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 403


# --- admin ------------------------------------------------------------------------------------


@pytest.fixture
def admin_client_logged(client: Any, django_user_model: Any) -> Any:
    user = django_user_model.objects.create_superuser("root", "", "pw-123456")
    client.force_login(user)
    return client


def test_usage_admin_is_read_only_and_cheap(
    admin_client_logged: Any, records: list[UsageRecord], django_assert_max_num_queries: Any
) -> None:
    records_insert([_record(DAY, "0.01", key=k) for k in range(10, 60)])
    with django_assert_max_num_queries(12):
        page = admin_client_logged.get("/admin/usage/usagerecord/")
    assert page.status_code == 200
    assert b"0.333333333333" in page.content
    assert admin_client_logged.get("/admin/usage/usagerecord/add/").status_code == 403
    record = records[0]
    detail = admin_client_logged.get(f"/admin/usage/usagerecord/{record.pk}/change/")
    assert detail.status_code == 200 and b'name="cost_usd"' not in detail.content
    found = admin_client_logged.get("/admin/usage/usagerecord/", {"q": record.request_id})
    assert found.status_code == 200 and record.request_id.encode() in found.content
    assert (
        admin_client_logged.get("/admin/usage/usagerecord/", {"status": "ok", "created_at__year": "2026"}).status_code
        == 200
    )


def test_admin_export_action_streams_pure_csv(admin_client_logged: Any, records: list[UsageRecord]) -> None:
    chosen = records[:3]
    response = admin_client_logged.post(
        "/admin/usage/usagerecord/",
        {"action": "export_csv", "_selected_action": [str(r.pk) for r in chosen]},
    )
    assert isinstance(response, StreamingHttpResponse)
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(lines) == 1 + 3
    cost = lines[0].index("cost_usd")
    assert sum(Decimal(line[cost]) for line in lines[1:]) == sum((r.cost_usd for r in chosen), Decimal(0))


def test_admin_cost_report_form_gives_the_api_report(admin_client_logged: Any, records: list[UsageRecord]) -> None:
    assert admin_client_logged.get("/admin/usage/usagerecord/report/").status_code == 200
    response = admin_client_logged.get(
        "/admin/usage/usagerecord/report/",
        {"start": "2026-11-01", "end": "2026-11-03", "group_by": ["team"], "format": "csv", "totals": "on"},
    )
    lines = list(csv.reader(io.StringIO(response.content.decode())))
    assert lines[0][0] == "team" and lines[-1][0] == "TOTAL" and Decimal(lines[-1][-1]) == Decimal("1.433333333341")
    # the unpriced-only group (team "") shows an empty cost with its unpriced count, in the admin export too
    plain = admin_client_logged.get(
        "/admin/usage/usagerecord/report/",
        {"start": "2026-11-01", "end": "2026-11-03", "group_by": ["key"], "format": "csv"},
    )
    rows = list(csv.DictReader(io.StringIO(plain.content.decode())))
    assert [(r["client_key_id"], r["cost_usd"], r["unpriced_requests"]) for r in rows][-1] == ("3", "", "1")
    bad = admin_client_logged.get(
        "/admin/usage/usagerecord/report/", {"start": "2026-11-03", "end": "2026-11-01", "format": "csv"}
    )
    assert bad.status_code == 200 and b"must be after" in bad.content


def test_unfiltered_admin_count_comes_from_table_statistics(
    records: list[UsageRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connection

    from usage.admin import EstimatedCountPaginator

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE usage_usagerecord")
    monkeypatch.setattr(EstimatedCountPaginator, "ESTIMATE_ABOVE", -1)
    records_insert([_record(DAY, "1")])  # not yet in the statistics
    assert EstimatedCountPaginator(UsageRecord.objects.all(), 10).count == len(records)
    assert EstimatedCountPaginator(UsageRecord.objects.filter(cost_usd=Decimal("1")), 10).count == 1  # exact
