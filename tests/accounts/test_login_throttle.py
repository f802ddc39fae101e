"""Password guessing on ``/api/token/`` and the admin login is throttled across processes.

Real gunicorn with two worker processes: the counter lives in Redis, so the limit holds
for the whole gateway, not per process. Each request opens a new connection so the
kernel spreads them over both workers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.procs import LiveGateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 10
CLOSE = {"Connection": "close"}


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: Any, django_user_model: Any) -> Any:
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    # The server hashes with the production settings (PBKDF2): store hashes it verifies cheaply.
    for name in ("ops", "ops2", "admin1"):
        django_user_model.objects.create(
            username=name,
            is_staff=True,
            password=PBKDF2PasswordHasher().encode(f"{name}-password-1", "fixedsalt1234", iterations=1000),
        )
    # A window of an hour, so that none ends in the middle of the test.
    monkeypatch.setenv("GATEWAY_LOGIN_RATE", f"{LIMIT}/hour")
    gunicorn = start_gateway(tmp_path)
    try:
        gunicorn.wait_healthy()
        yield gunicorn
    finally:
        gunicorn.stop()


def token(url: str, username: str, password: str) -> requests.Response:
    return requests.post(
        url + "/api/token/", json={"username": username, "password": password}, headers=CLOSE, timeout=10
    )


def assert_throttled(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert 1 <= int(response.headers["Retry-After"]) <= 3600


def test_token_guessing_is_throttled_across_processes(server: LiveGateway) -> None:
    statuses = [token(server.url, "ops", f"guess-{n}").status_code for n in range(3 * LIMIT)]
    assert statuses == [401] * LIMIT + [429] * (2 * LIMIT), statuses
    assert len({pid for pid, _ in server.served("/api/token/")}) == 2, "the requests did not reach both workers"

    assert_throttled(token(server.url, "ops", "guess-again"))
    assert_throttled(token(server.url, "ops", "ops-password-1"))  # even the right password, for now
    assert token(server.url, "ops2", "wrong").status_code == 401  # another username is counted apart
    assert token(server.url, "ops2", "ops2-password-1").status_code == 200


def test_admin_login_guessing_is_throttled_across_processes(server: LiveGateway) -> None:
    session = requests.Session()
    session.headers.update(CLOSE)
    login = server.url + "/admin/login/"
    assert session.get(login, timeout=10).status_code == 200
    answered = 0
    started = time.monotonic()
    for n in range(2 * LIMIT):
        response = session.post(
            login,
            data={"username": "admin1", "password": f"guess-{n}", "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            timeout=10,
        )
        if response.status_code == 200:
            assert "Please enter the correct username and password" in response.text
            answered += 1
        else:
            assert_throttled(response)
    assert answered == LIMIT, f"{answered} answered in {time.monotonic() - started:.1f} s"
    assert len({pid for pid, _ in server.served("/admin/login/")}) == 2, "the requests did not reach both workers"
    # The API's login shares the counter: the same username from the same address is refused there too.
    assert_throttled(token(server.url, "admin1", "admin1-password-1"))
