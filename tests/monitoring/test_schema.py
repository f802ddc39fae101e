"""The OpenAPI 3.1 schema describes every endpoint, and the real responses match it.

Each endpoint is called on a live gateway (key and JWT authenticated, successes and
errors) and its response is validated against the schema served at ``/api/schema/``.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import jsonschema
import orjson
import pytest
import requests

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
PATHS = {
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/v1/models/{model}",
    "/v1/routing/estimate-cost",
    "/v1/routing/explain",
    "/v1/routing/latency",
    "/v1/reports/costs",
    "/admin/routing/strategy",
    "/api/token/",
    "/api/token/refresh/",
    "/v1/admin/keys",
    "/v1/admin/keys/{prefix}",
    "/v1/admin/keys/{prefix}/revoke",
    "/v1/admin/keys/{prefix}/rotate",
    "/v1/admin/teams",
    "/v1/admin/teams/{team_id}",
}


def load_schema(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/api/schema/?format=json", timeout=10) as response:
        assert response.status == 200
        return orjson.loads(response.read())


def staff_tokens(url: str) -> dict[str, str]:
    from django.contrib.auth.models import User

    User.objects.create_user("ops", password="ops-password-1", is_staff=True, is_superuser=True)
    response = requests.post(url + "/api/token/", json={"username": "ops", "password": "ops-password-1"}, timeout=10)
    assert response.status_code == 200
    return response.json()


class Validator:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, path: str, method: str, response: requests.Response) -> None:
        operation = self.schema["paths"][path][method.lower()]
        status = str(response.status_code)
        assert status in operation["responses"], f"{method} {path}: status {status} is not documented"
        content = operation["responses"][status].get("content", {})
        media = response.headers["content-type"].split(";")[0].strip()
        assert media in content, f"{method} {path} {status}: {media} is not documented ({list(content)})"
        if media == "application/json":
            schema = {**content[media]["schema"], "components": self.schema["components"]}
            jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
        self.checked.add((path, method, response.status_code))


def test_schema_is_openapi_3_1_and_lists_every_endpoint(gateway_url: str) -> None:
    schema = load_schema(gateway_url)
    assert schema["openapi"] == "3.1.0"
    assert set(schema["paths"]) == PATHS
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A client API key issued by an operator.",
    }


def test_docs_page_is_served_without_a_cdn(settings: Any) -> None:
    from django.test import Client

    # WhiteNoise serves what collectstatic gathered (the Dockerfile runs it); here it reads the apps' folders.
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True
    client = Client()
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "/static/drf_spectacular_sidecar/" in html
    assert "cdn" not in html.lower() and "https://" not in html
    for asset in ("swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-dist/swagger-ui.css"):
        response = client.get(f"/static/drf_spectacular_sidecar/{asset}")
        assert response.status_code == 200 and b"".join(response.streaming_content)


def test_live_responses_match_the_schema(openai_route: dict[str, Any], gateway_url: str) -> None:
    validator = Validator(load_schema(gateway_url))
    key = {"Authorization": f"Bearer {openai_route['secret']}"}
    url = gateway_url

    def call(method: str, path: str, template: str | None = None, **kwargs: Any) -> requests.Response:
        response = requests.request(method, url + path, timeout=10, **kwargs)
        validator.check(template or path, method, response)
        return response

    assert call("POST", "/v1/chat/completions", json=HELLO, headers=key).status_code == 200
    stream = call("POST", "/v1/chat/completions", json={**HELLO, "stream": True}, headers=key)
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert call("POST", "/v1/chat/completions", json={**HELLO, "model": "nope"}, headers=key).status_code == 404
    assert call("POST", "/v1/chat/completions", json={"model": "gpt-4o-mini"}, headers=key).status_code == 400
    assert call("POST", "/v1/chat/completions", json=HELLO).status_code == 401
    assert call("GET", "/v1/models", headers=key).status_code == 200
    assert call("GET", "/v1/models/gpt-4o-mini", "/v1/models/{model}", headers=key).status_code == 200
    assert call("GET", "/v1/models/nope", "/v1/models/{model}", headers=key).status_code == 404
    assert call("POST", "/v1/routing/estimate-cost", json=HELLO, headers=key).status_code == 200
    assert call("POST", "/v1/routing/explain", json=HELLO, headers=key).status_code == 200
    embed = {"model": "gpt-4o-mini", "input": "hi"}
    assert call("POST", "/v1/embeddings", json=embed, headers=key).status_code == 400  # a chat model
    assert call("POST", "/v1/embeddings", json={**embed, "model": "nope"}, headers=key).status_code == 404
    message = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
    assert call("POST", "/v1/messages", json=message, headers=key).status_code == 200
    streamed = call("POST", "/v1/messages", json={**message, "stream": True}, headers=key)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert call("POST", "/v1/messages", json={**message, "max_tokens": 0}, headers=key).status_code == 400
    assert call("POST", "/v1/messages", json=message).status_code == 401
    assert call("POST", "/v1/messages/count_tokens", json=message, headers=key).status_code == 200
    assert call("GET", "/v1/routing/latency", headers=key).status_code == 200
    assert call("GET", "/v1/routing/latency?window=1y", "/v1/routing/latency", headers=key).status_code == 400

    tokens = staff_tokens(url)
    validator.check(
        "/api/token/", "POST", requests.post(url + "/api/token/", json={"username": "ops", "password": "x"}, timeout=10)
    )
    assert call("POST", "/api/token/refresh/", json={"refresh": tokens["refresh"]}).status_code == 200
    jwt = {"Authorization": f"Bearer {tokens['access']}"}
    assert call("GET", "/admin/routing/strategy", headers=jwt).status_code == 200
    assert call("POST", "/admin/routing/strategy", json={"strategy": "cost"}, headers=jwt).status_code == 200
    assert call("POST", "/admin/routing/strategy", json={"strategy": "nope"}, headers=jwt).status_code == 400
    assert call("GET", "/admin/routing/strategy").status_code == 401
    report = "/v1/reports/costs?start=2026-01-01&end=2026-02-01&group_by=model"
    assert call("GET", report, "/v1/reports/costs", headers=jwt).status_code == 200
    assert call("GET", "/v1/reports/costs?start=x", "/v1/reports/costs", headers=jwt).status_code == 400
    assert call("GET", report, "/v1/reports/costs", headers=key).status_code == 401

    # keys and teams over HTTP
    team = call("POST", "/v1/admin/teams", json={"name": "search", "rpm_limit": 60}, headers=jwt)
    assert team.status_code == 201
    team_path = "/v1/admin/teams/{team_id}"
    assert call("GET", "/v1/admin/teams", headers=jwt).status_code == 200
    assert call("PATCH", f"/v1/admin/teams/{team.json()['id']}", team_path, json={"tpm_limit": 9}, headers=jwt).ok
    assert call("GET", "/v1/admin/teams/999999", team_path, headers=jwt).status_code == 404
    created = call("POST", "/v1/admin/keys", json={"name": "k", "team": "search", "budget_usd": "5"}, headers=jwt)
    assert created.status_code == 201 and created.json()["secret"]
    prefix = created.json()["prefix"]
    assert call("GET", "/v1/admin/keys?status=active", "/v1/admin/keys", headers=jwt).status_code == 200
    assert call("GET", "/v1/admin/keys?status=nope", "/v1/admin/keys", headers=jwt).status_code == 400
    assert call("GET", "/v1/admin/keys", headers=key).status_code == 401
    detail = "/v1/admin/keys/{prefix}"
    assert call("GET", f"/v1/admin/keys/{prefix}", detail, headers=jwt).status_code == 200
    assert call("PATCH", f"/v1/admin/keys/{prefix}", detail, json={"rpm_limit": 5}, headers=jwt).status_code == 200
    assert call("GET", "/v1/admin/keys/nope", detail, headers=jwt).status_code == 404
    rotate = call("POST", f"/v1/admin/keys/{prefix}/rotate", detail + "/rotate", json={"grace_seconds": 0}, headers=jwt)
    assert rotate.status_code == 200 and rotate.json()["secret"]
    assert call("POST", f"/v1/admin/keys/{prefix}/revoke", detail + "/revoke", headers=jwt).status_code == 200
    assert call("POST", f"/v1/admin/keys/{prefix}/rotate", detail + "/rotate", headers=jwt).status_code == 409
    assert call("DELETE", f"/v1/admin/teams/{team.json()['id']}", team_path, headers=jwt).status_code == 409

    assert {path for path, _, _ in validator.checked} == PATHS
