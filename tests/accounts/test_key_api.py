"""``/v1/admin/keys`` and ``/v1/admin/teams`` with plain ``requests`` against a live server;
``revoke_key`` and ``rotate_key``."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
import requests
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "mock-gpt"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def operator(db: None) -> Any:
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("keeper", password="keeper-password-1", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="accounts",
            codename__in=[
                f"{action}_{model}" for action in ("view", "add", "change", "delete") for model in ("clientkey", "team")
            ],
        )
    )
    return user


@pytest.fixture
def mock_model(make_provider: Any, make_deployment: Any, make_price: Any) -> None:
    make_deployment(make_provider("m", kind="mock", vendor="mock"), MODEL, max_output_tokens=1000)
    make_price("mock", MODEL, "1", "1")


def token(url: str, username: str, password: str) -> str:
    response = requests.post(url + "/api/token/", json={"username": username, "password": password}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["access"]


class Api:
    def __init__(self, url: str, bearer: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {bearer}"}

    def __call__(self, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(method, self.url + path, json=body, headers=self.headers, timeout=10)


@pytest.fixture
def api(live_server: Any, operator: Any) -> Api:
    return Api(live_server.url, token(live_server.url, "keeper", "keeper-password-1"))


def chat(url: str, secret: str) -> requests.Response:
    return requests.post(
        url + "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )


def history(obj: Any) -> list[tuple[str, int, str]]:
    from django.contrib.admin.models import LogEntry

    entries = LogEntry.objects.filter(object_id=str(obj.pk)).select_related("user", "content_type").order_by("id")
    return [(e.user.username, e.action_flag, e.get_change_message()) for e in entries]


def test_key_lifecycle_over_http(api: Api, live_server: Any, mock_model: None) -> None:
    from django.contrib.admin.models import ADDITION, CHANGE

    from accounts.models import ClientKey

    team = api("POST", "/v1/admin/teams", {"name": "search", "rpm_limit": 600, "budget_usd": "50"})
    assert team.status_code == 201, team.text
    assert team.json()["rpm_limit"] == 600 and team.json()["budget_usd"] == "50"

    created = api(
        "POST",
        "/v1/admin/keys",
        {
            "name": "indexer",
            "team": "search",
            "allowed_models": [MODEL],
            "rpm_limit": 60,
            "tpm_limit": 50_000,
            "budget_usd": "5.25",
            "budget_period": "day",
            "metadata": {"service": "indexer"},
        },
    )
    assert created.status_code == 201, created.text
    key = created.json()
    secret = key["secret"]
    assert secret.startswith("gwk_" + key["prefix"] + "_")
    assert key["team"]["name"] == "search" and key["status"] == "active" and key["rpm_limit"] == 60
    assert chat(live_server.url, secret).status_code == 200

    fetched = api("GET", f"/v1/admin/keys/{key['prefix']}").json()
    assert "secret" not in fetched  # shown once, at creation
    assert fetched["budget_usd"] == "5.25" and fetched["metadata"] == {"service": "indexer"}

    updated = api("PATCH", f"/v1/admin/keys/gwk_{key['prefix']}", {"rpm_limit": None, "allowed_models": []})
    assert updated.status_code == 200 and updated.json()["rpm_limit"] is None

    other = api("POST", "/v1/admin/keys", {"name": "loose"}).json()
    listed = api("GET", "/v1/admin/keys?team=search").json()
    assert [k["prefix"] for k in listed["data"]] == [key["prefix"]]

    revoked = api("POST", f"/v1/admin/keys/{key['prefix']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    refused = chat(live_server.url, secret)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "key_revoked"
    assert [k["prefix"] for k in api("GET", "/v1/admin/keys?status=revoked").json()["data"]] == [key["prefix"]]
    assert [k["prefix"] for k in api("GET", "/v1/admin/keys?status=active").json()["data"]] == [other["prefix"]]

    row = ClientKey.objects.get(prefix=key["prefix"])
    assert history(row) == [
        ("keeper", ADDITION, "Created (over the API)."),
        ("keeper", CHANGE, "Changed allowed_models, rpm_limit (over the API)."),
        ("keeper", CHANGE, "Revoked (over the API)."),
    ]


def test_rotation_keeps_the_old_secret_for_the_grace_period(
    api: Api, live_server: Any, mock_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gatewaysite.clock import clock

    key = api("POST", "/v1/admin/keys", {"name": "rotating"}).json()
    old = key["secret"]
    rotated = api("POST", f"/v1/admin/keys/{key['prefix']}/rotate", {"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and rotated.json()["prefix"] == key["prefix"]
    assert rotated.json()["previous_secret_valid_until"] is not None
    assert chat(live_server.url, new).status_code == 200
    assert chat(live_server.url, old).status_code == 200  # within the grace period

    real_now = clock.now
    monkeypatch.setattr(clock, "now", lambda: real_now() + timedelta(seconds=3601))
    assert chat(live_server.url, old).status_code == 401  # the grace period is over
    assert chat(live_server.url, new).status_code == 200

    again = api("POST", f"/v1/admin/keys/{key['prefix']}/rotate", {"grace_seconds": 0}).json()["secret"]
    assert chat(live_server.url, new).status_code == 401  # no grace: the replaced secret stops at once
    assert chat(live_server.url, again).status_code == 200


def test_bad_input_gets_openai_shaped_errors(api: Api, mock_model: None) -> None:
    cases = [
        ({"name": ""}, "name"),
        ({"name": "x", "rpm_limit": 0}, "rpm_limit"),
        ({"name": "x", "budget_usd": "1.0000001"}, "budget_usd"),
        ({"name": "x", "team": "nobody"}, "team"),
        ({"name": "x", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "x", "strategy": "fastest"}, "strategy"),
        ({"name": "x", "secret_hash": "00"}, "secret_hash"),
        ({"owner": "x"}, "name"),
    ]
    for body, param in cases:
        response = api("POST", "/v1/admin/keys", body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param
    assert api("POST", "/v1/admin/keys", ["not", "an", "object"]).status_code == 400
    assert api("GET", "/v1/admin/keys/zzzzzzzz").status_code == 404
    assert api("GET", "/v1/admin/keys?status=lost").status_code == 400
    key = api("POST", "/v1/admin/keys", {"name": "gone"}).json()
    api("POST", f"/v1/admin/keys/{key['prefix']}/revoke")
    assert api("POST", f"/v1/admin/keys/{key['prefix']}/rotate").status_code == 409
    assert api("POST", f"/v1/admin/keys/{key['prefix']}/rotate", {"grace_seconds": -1}).status_code == 400


def test_teams_over_http(api: Api) -> None:
    from django.contrib.admin.models import DELETION

    from accounts.models import Team

    created = api("POST", "/v1/admin/teams", {"name": "ads", "tpm_limit": 1000}).json()
    assert api("POST", "/v1/admin/teams", {"name": "ads"}).status_code == 409
    changed = api("PATCH", f"/v1/admin/teams/{created['id']}", {"tpm_limit": 2000, "budget_period": "day"})
    assert changed.json()["tpm_limit"] == 2000 and changed.json()["budget_period"] == "day"
    assert [t["name"] for t in api("GET", "/v1/admin/teams").json()["data"]] == ["ads"]
    api("POST", "/v1/admin/keys", {"name": "k", "team": created["id"]})
    assert api("DELETE", f"/v1/admin/teams/{created['id']}").status_code == 409
    empty = api("POST", "/v1/admin/teams", {"name": "empty"}).json()
    team = Team.objects.get(pk=empty["id"])
    assert api("DELETE", f"/v1/admin/teams/{empty['id']}").status_code == 204
    assert history(team)[-1][:2] == ("keeper", DELETION)


def test_only_staff_with_the_model_permissions(live_server: Any, operator: Any, issue_key: Any) -> None:
    from django.contrib.auth.models import Permission, User

    _, client_secret = issue_key()
    url = live_server.url
    assert Api(url, client_secret)("GET", "/v1/admin/keys").status_code == 401  # a client key never gets in
    assert requests.get(url + "/v1/admin/keys", timeout=10).status_code == 401

    User.objects.create_user("viewer", password="viewer-password-1", is_staff=True).user_permissions.set(
        Permission.objects.filter(codename__in=["view_clientkey"])
    )
    viewer = Api(url, token(url, "viewer", "viewer-password-1"))
    assert viewer("GET", "/v1/admin/keys").status_code == 200
    assert viewer("POST", "/v1/admin/keys", {"name": "nope"}).status_code == 403
    prefix = issue_key(name="target")[0].prefix
    assert viewer("POST", f"/v1/admin/keys/{prefix}/revoke").status_code == 403
    assert viewer("POST", f"/v1/admin/keys/{prefix}/rotate").status_code == 403
    assert viewer("GET", "/v1/admin/teams").status_code == 403  # no view_team

    User.objects.create_user("clerk", password="clerk-password-1", is_staff=False)
    assert Api(url, token(url, "clerk", "clerk-password-1"))("GET", "/v1/admin/keys").status_code == 403


def test_revoke_and_rotate_commands(live_server: Any, mock_model: None, issue_key: Any) -> None:
    key, secret = issue_key(name="cli")
    out = StringIO()
    call_command("rotate_key", f"gwk_{key.prefix}", "--grace", "0", stdout=out)
    new = out.getvalue().strip().splitlines()[-1]
    assert new.startswith(f"gwk_{key.prefix}_") and new != secret
    assert chat(live_server.url, secret).status_code == 401
    assert chat(live_server.url, new).status_code == 200

    out = StringIO()
    call_command("revoke_key", key.prefix, stdout=out)
    assert "Revoked" in out.getvalue()
    assert chat(live_server.url, new).status_code == 401
    with pytest.raises(Exception, match="no client key"):
        call_command("revoke_key", "zzzzzzzz")
