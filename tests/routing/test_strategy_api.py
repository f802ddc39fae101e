"""``/admin/routing/strategy`` with staff JWTs, including the seed's curl examples as written."""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

import pytest
import requests

from routing.strategies.registry import strategy_names

pytestmark = pytest.mark.django_db(transaction=True)

# The seed's examples, verbatim (phase 4, "Set Routing Strategy"): no content-type header.
SEED_EXAMPLES = {
    "cost": """curl -X POST http://localhost:8084/admin/routing/strategy \\
  -H "Authorization: Bearer JWT_TOKEN" \\
  -d '{"strategy": "cost"}'""",
    "latency": """curl -X POST http://localhost:8084/admin/routing/strategy \\
  -H "Authorization: Bearer JWT_TOKEN" \\
  -d '{"strategy": "latency"}'""",
    "balanced": """curl -X POST http://localhost:8084/admin/routing/strategy \\
  -H "Authorization: Bearer JWT_TOKEN" \\
  -d '{"strategy": "balanced"}'""",
}


@pytest.fixture
def users(db: None, staff_groups: dict[str, Any]) -> dict[str, Any]:
    from django.contrib.auth.models import User

    staff = User.objects.create_user("ops", password="ops-password-1", is_staff=True)
    staff.groups.add(staff_groups["operators"])
    return {
        "staff": staff,
        "plain": User.objects.create_user("analyst", password="analyst-password-1"),
    }


def obtain(url: str, username: str, password: str) -> dict[str, str]:
    response = requests.post(url + "/api/token/", json={"username": username, "password": password}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def strategy_in_db() -> str:
    from routing.models import RoutingSettings

    row = RoutingSettings.objects.filter(pk=1).first()
    return row.strategy if row else "model"


@pytest.mark.parametrize("strategy", list(SEED_EXAMPLES))
def test_seed_curl_examples_as_written(live_server: Any, users: dict[str, Any], strategy: str) -> None:
    token = obtain(live_server.url, "ops", "ops-password-1")["access"]
    command = SEED_EXAMPLES[strategy].replace("http://localhost:8084", live_server.url).replace("JWT_TOKEN", token)
    argv = shlex.split(command.replace("\\\n", " "))
    assert "-H" in argv and not any("content-type" in a.lower() for a in argv)
    result = subprocess.run([*argv, "-s", "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=30)
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout + result.stderr
    answer = json.loads(body)
    assert answer["strategy"] == strategy and answer["strategies"] == strategy_names()
    assert answer["propagation"]["complete"] is True  # every live process serves it (here: none but this one)
    assert strategy_in_db() == strategy


def test_get_returns_the_active_strategy_and_the_valid_names(live_server: Any, users: dict[str, Any]) -> None:
    token = obtain(live_server.url, "ops", "ops-password-1")["access"]
    response = requests.get(
        live_server.url + "/admin/routing/strategy", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200
    assert response.json() == {"strategy": "model", "strategies": strategy_names()}
    assert {"model", "balanced", "cost", "custom"} <= set(response.json()["strategies"])


def test_refreshed_token_works(live_server: Any, users: dict[str, Any]) -> None:
    pair = obtain(live_server.url, "ops", "ops-password-1")
    refreshed = requests.post(live_server.url + "/api/token/refresh/", json={"refresh": pair["refresh"]}, timeout=10)
    assert refreshed.status_code == 200
    response = requests.post(
        live_server.url + "/admin/routing/strategy",
        data=b'{"strategy": "custom"}',
        headers={"Authorization": f"Bearer {refreshed.json()['access']}"},
        timeout=10,
    )
    assert response.status_code == 200 and strategy_in_db() == "custom"


def test_unknown_strategy_is_a_400_listing_valid_names(live_server: Any, users: dict[str, Any]) -> None:
    token = obtain(live_server.url, "ops", "ops-password-1")["access"]
    headers = {"Authorization": f"Bearer {token}"}
    response = requests.post(
        live_server.url + "/admin/routing/strategy", data=b'{"strategy": "fastest"}', headers=headers, timeout=10
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_strategy" and error["param"] == "strategy"
    for name in strategy_names():
        assert name in error["message"]
    for bad in (b"{}", b'{"strategy": 3}', b"not json", b"[]"):
        response = requests.post(live_server.url + "/admin/routing/strategy", data=bad, headers=headers, timeout=10)
        assert response.status_code == 400, bad
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert strategy_in_db() == "model"


def test_wrong_credentials_are_refused(live_server: Any, users: dict[str, Any], issue_key: Any) -> None:
    url = live_server.url + "/admin/routing/strategy"
    body = b'{"strategy": "cost"}'
    _, api_key = issue_key()
    by_api_key = requests.post(url, data=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert by_api_key.status_code in (401, 403)
    plain = obtain(live_server.url, "analyst", "analyst-password-1")["access"]
    by_non_staff = requests.post(url, data=body, headers={"Authorization": f"Bearer {plain}"}, timeout=10)
    assert by_non_staff.status_code == 403
    assert by_non_staff.json()["error"]["type"] == "permission_error"
    anonymous = requests.post(url, data=body, timeout=10)
    assert anonymous.status_code == 401
    bad_password = requests.post(
        live_server.url + "/api/token/", json={"username": "ops", "password": "wrong"}, timeout=10
    )
    assert bad_password.status_code == 401
    assert strategy_in_db() == "model"


def test_switch_applies_to_the_next_completion(
    live_server: Any, users: dict[str, Any], make_provider: Any, make_deployment: Any, issue_key: Any, redis_client: Any
) -> None:
    provider = make_provider("mockp", kind="mock")
    for name in ("a", "b", "c"):
        make_deployment(provider, "gpt-4o", name=name)
    _, api_key = issue_key()

    def deployment_served() -> tuple[str, str]:
        response = requests.post(
            live_server.url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=10,
        )
        assert response.status_code == 200
        return response.headers["x-gateway-strategy"], response.headers["x-gateway-deployment"]

    assert {deployment_served() for _ in range(3)} == {("model", "a")}
    token = obtain(live_server.url, "ops", "ops-password-1")["access"]
    switched = requests.post(
        live_server.url + "/admin/routing/strategy",
        data=b'{"strategy": "balanced"}',
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert switched.status_code == 200
    assert {deployment_served() for _ in range(3)} == {("balanced", "a"), ("balanced", "b"), ("balanced", "c")}


def test_key_and_request_strategies_on_live_requests(
    live_server: Any, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> None:
    from routing.models import RoutingSettings

    provider = make_provider("mockp", kind="mock", vendor="mockvendor")
    make_deployment(provider, "gpt-4o", name="dear", provider_model="dear", priority=1)
    make_deployment(provider, "gpt-4o", name="cheap", provider_model="cheap", priority=2)
    make_price("mockvendor", "dear", "10", "30")
    make_price("mockvendor", "cheap", "0.1", "0.3")
    RoutingSettings.objects.update_or_create(pk=1, defaults={"strategy": "model", "allow_request_strategy": False})
    _, plain_key = issue_key("plain")
    _, cost_key = issue_key("cost-key", strategy="cost")

    def served(secret: str, **headers: str) -> tuple[str, str, str]:
        response = requests.post(
            live_server.url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"Authorization": f"Bearer {secret}", **headers},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        h = response.headers
        return h["x-gateway-strategy"], h["x-gateway-route-reason"], h["x-gateway-deployment"]

    assert served(plain_key) == ("model", "priority", "dear")
    assert served(cost_key) == ("cost", "key:cheapest", "cheap")
    assert served(plain_key, **{"x-gateway-strategy": "cost"}) == ("model", "priority", "dear")  # not allowed
    RoutingSettings.objects.filter(pk=1).update(allow_request_strategy=True)
    from gatewaysite.config.changes import config_changed

    config_changed()
    assert served(plain_key, **{"x-gateway-strategy": "cost"}) == ("cost", "request:cheapest", "cheap")
    assert served(cost_key, **{"x-gateway-strategy": "model"}) == ("model", "request:priority", "dear")
    bad = requests.post(
        live_server.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {plain_key}", "x-gateway-strategy": "fastest"},
        timeout=10,
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_strategy"


def test_token_from_curl_without_content_type(live_server: Any, users: dict[str, Any]) -> None:
    """The README's token example: curl -d with a JSON body and curl's default form content type."""
    body = json.dumps({"username": "ops", "password": "ops-password-1"})
    result = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", f"{live_server.url}/api/token/", "-d", body],
        capture_output=True,
        text=True,
        timeout=30,
    )
    payload, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout + result.stderr
    assert set(json.loads(payload)) == {"access", "refresh"}
