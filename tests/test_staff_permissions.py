"""Least privilege for staff: ``is_staff`` alone can neither switch the strategy nor read costs.

Against a live server with real JWTs: a staff user with no permission gets an
OpenAI-shaped 403; the shipped ``operators`` group may switch the strategy, the
``finance`` group may read cost reports; client keys reach neither.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from rest_framework_simplejwt.tokens import RefreshToken

pytestmark = pytest.mark.django_db(transaction=True)

REPORT = {"start": "2026-11-01", "end": "2026-11-02"}


@pytest.fixture
def staff(django_user_model: Any, staff_groups: dict[str, Any]) -> dict[str, str]:
    """A bearer header per staff user: no permission, operators, finance."""
    headers = {}
    for name, group in (("nobody", None), ("operator", "operators"), ("accountant", "finance")):
        user = django_user_model.objects.create_user(name, password="pw-123456789", is_staff=True)
        if group:
            user.groups.add(staff_groups[group])
        headers[name] = f"Bearer {RefreshToken.for_user(user).access_token}"
    return headers


def switch(url: str, authorization: str, strategy: str = "cost") -> requests.Response:
    return requests.post(
        url + "/admin/routing/strategy",
        json={"strategy": strategy},
        headers={"Authorization": authorization},
        timeout=10,
    )


def read_strategy(url: str, authorization: str) -> requests.Response:
    return requests.get(url + "/admin/routing/strategy", headers={"Authorization": authorization}, timeout=10)


def costs(url: str, authorization: str) -> requests.Response:
    return requests.get(url + "/v1/reports/costs", params=REPORT, headers={"Authorization": authorization}, timeout=10)


def assert_forbidden(response: requests.Response, permission: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "permission_error" and error["code"] == "permission_denied"
    assert permission in error["message"]


def strategy_in_db() -> str:
    from routing.models import RoutingSettings

    row = RoutingSettings.objects.filter(pk=1).first()
    return row.strategy if row else "model"


def test_a_staff_user_without_permissions_gets_nothing(live_server: Any, staff: dict[str, str]) -> None:
    url = live_server.url
    assert_forbidden(switch(url, staff["nobody"]), "routing.change_routingsettings")
    assert strategy_in_db() == "model"
    assert_forbidden(read_strategy(url, staff["nobody"]), "routing.view_routingsettings")
    assert_forbidden(costs(url, staff["nobody"]), "usage.view_cost_reports")


def test_operators_switch_the_strategy_but_read_no_costs(live_server: Any, staff: dict[str, str]) -> None:
    url = live_server.url
    response = switch(url, staff["operator"], "cost")
    assert response.status_code == 200 and response.json()["strategy"] == "cost"
    assert strategy_in_db() == "cost"
    assert read_strategy(url, staff["operator"]).json()["strategy"] == "cost"
    assert_forbidden(costs(url, staff["operator"]), "usage.view_cost_reports")


def test_finance_reads_costs_but_does_not_switch(live_server: Any, staff: dict[str, str]) -> None:
    url = live_server.url
    response = costs(url, staff["accountant"])
    assert response.status_code == 200 and "total" in response.json()
    assert_forbidden(switch(url, staff["accountant"]), "routing.change_routingsettings")
    assert strategy_in_db() == "model"


def test_client_keys_reach_no_staff_endpoint(live_server: Any, issue_key: Any) -> None:
    _, secret = issue_key()
    bearer = f"Bearer {secret}"
    for response in (
        switch(live_server.url, bearer),
        read_strategy(live_server.url, bearer),
        costs(live_server.url, bearer),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_the_admin_applies_the_same_permissions(
    client: Any, django_user_model: Any, staff_groups: dict[str, Any]
) -> None:
    from routing.services.settings import routing_settings_ensure
    from usage.models import UsageRecord

    routing_settings_ensure()  # the single row (pk=1)
    record = UsageRecord.objects.create(request_id="req_1", created_at="2026-11-01T00:00:00Z", model="m")
    nobody = django_user_model.objects.create_user("nobody", password="pw-123456789", is_staff=True)
    operator = django_user_model.objects.create_user("operator", password="pw-123456789", is_staff=True)
    operator.groups.add(staff_groups["operators"])
    accountant = django_user_model.objects.create_user("accountant", password="pw-123456789", is_staff=True)
    accountant.groups.add(staff_groups["finance"])
    report = "/admin/usage/usagerecord/report/"
    export = {"action": "export_csv", "_selected_action": [str(record.pk)]}

    client.force_login(nobody)
    assert client.get(report).status_code == 403
    assert client.get("/admin/usage/usagerecord/").status_code == 403
    assert client.get("/admin/routing/routingsettings/1/change/").status_code == 403

    client.force_login(operator)
    assert client.get(report).status_code == 403
    assert client.get("/admin/routing/routingsettings/1/change/").status_code == 200
    assert client.get("/admin/providers/provider/add/").status_code == 200
    assert client.get("/admin/accounts/clientkey/").status_code == 200

    client.force_login(accountant)
    listing = client.get("/admin/usage/usagerecord/")
    assert listing.status_code == 200 and b"Cost report" in listing.content
    assert client.get(report).status_code == 200
    exported = client.post("/admin/usage/usagerecord/", export)
    assert exported.status_code == 200 and exported["content-type"].startswith("text/csv")
    assert client.get(f"/admin/usage/usagerecord/{record.pk}/change/").status_code == 200  # read-only view
    assert client.get("/admin/providers/provider/").status_code == 403
    assert client.get("/admin/routing/routingsettings/1/change/").status_code == 403


def test_the_admin_export_needs_the_cost_report_permission(client: Any, django_user_model: Any) -> None:
    """Viewing usage records is not enough to export costs."""
    from django.contrib.auth.models import Permission

    from usage.models import UsageRecord

    record = UsageRecord.objects.create(request_id="req_1", created_at="2026-11-01T00:00:00Z", model="m")
    viewer = django_user_model.objects.create_user("viewer", password="pw-123456789", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    client.force_login(viewer)
    listing = client.get("/admin/usage/usagerecord/")
    assert listing.status_code == 200 and b"export_csv" not in listing.content and b"Cost report" not in listing.content
    response = client.post("/admin/usage/usagerecord/", {"action": "export_csv", "_selected_action": [str(record.pk)]})
    assert not response["content-type"].startswith("text/csv")


def test_the_groups_hold_what_the_docs_say(staff_groups: dict[str, Any]) -> None:
    operators = {f"{p.content_type.app_label}.{p.codename}" for p in staff_groups["operators"].permissions.all()}
    finance = {f"{p.content_type.app_label}.{p.codename}" for p in staff_groups["finance"].permissions.all()}
    assert finance == {"usage.view_usagerecord", "usage.view_cost_reports"}
    assert {"routing.change_routingsettings", "providers.add_provider", "accounts.change_clientkey"} <= operators
    assert {"providers.change_pricingrow", "routing.delete_routingrule", "accounts.add_team"} <= operators
    # of usage, only the latency pages (samples and rollups), not the usage records
    assert {p for p in operators if p.startswith("usage.")} == {"usage.view_latencysample", "usage.view_latencyrollup"}
    assert "routing.delete_routingsettings" not in operators
