"""Schemathesis against the live schema: generated requests for every operation (a bounded
number of examples each); no 5xx, every status and content type documented, every JSON
body as described. Part of ``make test``."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.monitoring.test_schema import staff_tokens

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES = 15  # per operation: bounded, the whole run takes seconds
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def credentials(openai_route: dict[str, Any], gateway_url: str) -> dict[str, str]:
    return {"key": openai_route["secret"], "jwt": staff_tokens(gateway_url)["access"]}


def _run(operation: Any, base_url: str, session: requests.Session, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, session=session, headers=headers, checks=CHECKS, timeout=10)

    run()


def test_api_honours_its_schema(credentials: dict[str, str], gateway_url: str) -> None:
    # The schema served by the live gateway, each operation driven through hypothesis
    # (schemathesis's pytest plugin cannot load a schema from a fixture under pytest 9).
    api = schemathesis.openapi.from_url(gateway_url + "/api/schema/?format=json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 25
    failures: dict[str, str] = {}
    with requests.Session() as session:
        for operation in operations:
            jwt = operation.path.startswith(("/admin/", "/v1/reports/", "/v1/admin/"))
            token = credentials["jwt"] if jwt else credentials["key"]
            headers = {} if operation.path.startswith("/api/token") else {"Authorization": f"Bearer {token}"}

            try:
                _run(operation, gateway_url, session, headers)
            except Exception as exc:  # noqa: BLE001 - collected so one run reports every operation
                failures[f"{operation.method.upper()} {operation.path}"] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{name}:\n{text}" for name, text in failures.items())
