"""The operator overview: exact spend today and this month by team, key and model (SVG
charts, no JavaScript), deployments over the last hour, budgets above 80%, unpriced
deployments, ingestion; and the latency chart draws a lone point."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from gatewaysite.clock import clock

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


@pytest.fixture
def frozen(monkeypatch: Any) -> datetime:
    monkeypatch.setattr(clock, "now", lambda: NOW)
    return NOW


def record(when: datetime, cost: str | None, *, team: str = "red", key: str = "svc", model: str = "gpt-4o") -> Any:
    from usage.ingest import records_insert
    from usage.models import UsageRecord

    [made] = records_insert(
        [
            UsageRecord(
                request_id=f"req_{next(_ids)}",
                created_at=when,
                key_name=key,
                key_prefix=f"p{key}",
                team=team,
                model=model,
                deployment=f"d-{model}",
                provider="up",
                status="ok",
                cost_usd=Decimal(cost) if cost is not None else None,
            )
        ]
    )
    return made


def test_spend_today_and_this_month_are_exact(frozen: datetime) -> None:
    from monitoring.spend import spend_summary
    from usage.models import UsageRollup

    record(NOW - timedelta(days=30), "100")  # February: not this month
    record(datetime(2026, 3, 2, 8, tzinfo=UTC), "0.000000000001", team="blue", key="etl", model="claude")
    record(datetime(2026, 3, 10, 23, 59, 59, tzinfo=UTC), "1.10")
    record(NOW - timedelta(hours=1), "2.25")
    record(NOW - timedelta(hours=2), "0.75", team="blue", key="etl", model="claude")
    record(NOW - timedelta(hours=3), None, model="mystery")  # no price: counted, never priced as zero

    today, month = spend_summary()
    assert today.total.cost_usd == Decimal("3.00") and today.total.requests == 3
    assert today.total.unpriced_requests == 1
    assert month.total.cost_usd == Decimal("4.100000000001") and month.total.requests == 5
    assert month.by_team["red"].cost_usd == Decimal("3.35")
    assert month.by_team["blue"].cost_usd == Decimal("0.750000000001")
    assert month.by_key["etl (petl)"].requests == 2
    assert month.by_model["claude"].cost_usd == Decimal("0.750000000001")
    assert month.by_model["mystery"].cost_usd == 0 and month.by_model["mystery"].unpriced_requests == 1
    # the overview read the hourly rollups: one cell per record here (distinct hours)
    assert UsageRollup.objects.count() == 6

    # A record that arrives late for yesterday is counted at once, in its own hour's cell.
    record(datetime(2026, 3, 14, 22, tzinfo=UTC), "5")
    _, month = spend_summary()
    assert month.total.cost_usd == Decimal("9.100000000001")
    assert UsageRollup.objects.get(hour=datetime(2026, 3, 14, 22, tzinfo=UTC)).cost_usd == Decimal("5")


@pytest.fixture
def staff_client(client: Any, django_user_model: Any) -> Any:
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_overview_page(
    staff_client: Any,
    frozen: datetime,
    make_provider: Any,
    make_deployment: Any,
    issue_key: Any,
    redis_client: Any,
    django_assert_max_num_queries: Any,
) -> None:
    from routing.models import LatencyRollup
    from usage.budgets import Budget
    from usage.cost import to_picodollars

    provider = make_provider("up", vendor="openai")
    make_deployment(provider, "gpt-unpriced")
    for minute in range(3):
        LatencyRollup.objects.create(
            deployment="up-gpt-4o",
            provider="up",
            minute=NOW - timedelta(minutes=10 + minute),
            count=10,
            error_count=1,
            sum_ms=900,
            min_ms=50,
            max_ms=300,
            histogram=[],
        )
    key, _ = issue_key(name="hungry", budget_usd=Decimal("10.00"), budget_period="month")
    spent = Budget("key", key.id, "hungry", Decimal("10.00"), "month").counters(NOW).spent
    redis_client.set(spent, to_picodollars(Decimal("8.50")))
    issue_key(name="thrifty", budget_usd=Decimal("10.00"), budget_period="month")
    record(NOW - timedelta(hours=1), "2.25", team="red", key="svc", model="gpt-4o")
    record(datetime(2026, 3, 3, tzinfo=UTC), "1.00", team="blue", key="etl", model="claude")

    staff_client.get("/admin/overview/")  # first view rolls the closed days up
    with django_assert_max_num_queries(20):
        page = staff_client.get("/admin/overview/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Spend today: $2.25" in html and "Spend this month: $3.25" in html
    assert html.count('role="img" aria-label="spend') == 6  # today and month, by team, key and model
    assert re.search(r'<rect x="200" y="0" width="270(\.0)?"', html)  # the largest bar is full width
    assert "up-gpt-4o" in html and "<td>30</td><td>3</td>" in html  # requests and errors over the hour
    assert "hungry" in html and "85%" in html and "thrifty" not in html
    assert "up-gpt-unpriced" in html
    assert "Usage stream: 0 event(s) waiting" in html
    from monitoring.selectors import dead_letter_model

    assert ("Dead letters" in html) == (dead_letter_model() is not None)
    assert "<script" not in html.split("<body")[1].replace('<script src="/static/admin/', "")  # the admin's own only
    assert "https://" not in html

    index = staff_client.get("/admin/")
    assert 'href="/admin/overview/"' in index.content.decode()


def test_overview_is_for_staff_only(client: Any) -> None:
    response = client.get("/admin/overview/")
    assert response.status_code == 302 and "/admin/login/" in response["location"]


def test_latency_chart_draws_a_single_point(staff_client: Any) -> None:
    from gatewaysite.clock import now
    from routing.latency.chart import latency_chart
    from routing.latency.histogram import Histogram
    from routing.models import LatencyRollup

    histogram = Histogram()
    histogram.add(120.0)
    LatencyRollup.objects.create(
        deployment="lonely",
        provider="up",
        minute=now().replace(second=0, microsecond=0) - timedelta(minutes=5),
        count=1,
        sum_ms=120,
        min_ms=120,
        max_ms=120,
        histogram=histogram.sparse(),
    )
    [line] = latency_chart(range_name="1h")["series"]
    assert len(line["dots"]) == 1 and " " not in line["p50"]
    html = staff_client.get("/admin/routing/latencyrollup/chart/?range=1h").content.decode()
    assert html.count("<circle") == 2  # p50 and p95


def test_partition_task_states_its_policy(frozen: datetime) -> None:
    from django.db import OperationalError

    from gatewaysite.celery import app
    from usage.tasks import maintain_partitions

    assert maintain_partitions.acks_late is True and maintain_partitions.expires
    assert maintain_partitions.autoretry_for == (OperationalError,)
    [entry] = [e for e in app.conf.beat_schedule.values() if e["task"] == "usage.maintain_partitions"]
    assert entry["schedule"] == 3600.0 and entry["options"]["queue"] == maintain_partitions.queue
    assert not [e for e in app.conf.beat_schedule.values() if e["task"] == "monitoring.rollup_spend"]
