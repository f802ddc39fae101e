"""Admin list pages cost the same number of queries for 3 rows as for 30: never one per row.

Each page is opened by a superuser with a few rows, then with ten times as many (and
their relations: keys with teams, deployments with providers, rules with keys, teams
and targets, records with keys); the query count must not grow, and stays under a
fixed bound.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

T0 = datetime(2026, 11, 1, tzinfo=UTC)
MAX_QUERIES = 20  # sessions, user, permissions, the page's count and rows, filters' choices


def _rows(kind: str, start: int, count: int) -> None:
    from accounts.models import Team
    from accounts.services import key_issue
    from providers.models import Deployment, PriceRepricing, PricingRow, Provider
    from routing.models import RoutingRule, RuleTarget
    from usage.models import LatencyRollup, LatencySample, UsageDeadLetter, UsageRecord

    for i in range(start, start + count):
        if kind == "keys" or kind == "teams":
            team = Team.objects.create(name=f"team-{i}")
            key_issue(name=f"key-{i}", team=team)
        elif kind in ("providers", "deployments"):
            provider = Provider.objects.create(name=f"p{i}", kind="mock")
            Deployment.objects.create(name=f"d{i}", model_name="m", provider=provider, provider_model="m")
        elif kind == "pricing":
            PricingRow.objects.create(
                vendor="v", model=f"m{i}", input_per_mtok=Decimal(1), output_per_mtok=Decimal(2), effective_from=T0
            )
        elif kind == "repricings":
            PriceRepricing.objects.create(actor="ops", reason=f"r{i}")
        elif kind == "rules":
            provider = Provider.objects.create(name=f"p{i}", kind="mock")
            deployment = Deployment.objects.create(name=f"d{i}", model_name="m", provider=provider, provider_model="m")
            team = Team.objects.create(name=f"team-{i}")
            key, _ = key_issue(name=f"key-{i}", team=team)
            rule = RoutingRule.objects.create(name=f"rule-{i}", priority=i, client_key=key, team=team)
            RuleTarget.objects.create(rule=rule, deployment=deployment)
        elif kind == "records":
            key, _ = key_issue(name=f"key-{i}")
            UsageRecord.objects.create(
                request_id=f"req_{i}", created_at=T0 + timedelta(seconds=i), model="m", client_key_id=key.pk
            )
        elif kind == "deadletters":
            UsageDeadLetter.objects.create(
                stream_id=f"{i}-0", request_id=f"req_{i}", payload="{}", error="boom", first_seen=T0, last_seen=T0
            )
        elif kind == "samples":
            LatencySample.objects.create(
                request_id=f"req_{i}",
                created_at=T0,
                provider="p",
                deployment=f"d{i}",
                model="m",
                total_ms=10,
                upstream_ms=8,
                overhead_ms=2,
            )
        elif kind == "rollups":
            LatencyRollup.objects.create(deployment=f"d{i}", provider="p", minute=T0, count=1, sum_ms=10)


PAGES = {
    "keys": "/admin/accounts/clientkey/",
    "teams": "/admin/accounts/team/",
    "providers": "/admin/providers/provider/",
    "deployments": "/admin/providers/deployment/",
    "pricing": "/admin/providers/pricingrow/",
    "repricings": "/admin/providers/pricerepricing/",
    "rules": "/admin/routing/routingrule/",
    "records": "/admin/usage/usagerecord/",
    "deadletters": "/admin/usage/usagedeadletter/",
    "samples": "/admin/usage/latencysample/",
    "rollups": "/admin/usage/latencyrollup/",
}


def _queries(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(captured.captured_queries)


@pytest.mark.parametrize("kind", sorted(PAGES))
def test_admin_list_page_queries_do_not_grow_with_rows(
    kind: str, admin_client: Any, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    url = PAGES[kind]
    _rows(kind, 1, 3)
    _queries(client=admin_client, url=url)  # warm: session, content types, the key cache
    few = _queries(admin_client, url)
    _rows(kind, 100, 27)
    with django_assert_max_num_queries(MAX_QUERIES):
        response = admin_client.get(url)
    assert response.status_code == 200
    many = _queries(admin_client, url)
    assert many == few, f"{url}: {few} queries with 3 rows, {many} with 30 (one or more per row)"
