"""Production settings pass ``check --deploy``; HTTPS is switchable and off by default.

``check --deploy`` runs as an operator runs it, in a subprocess with the production
environment (docs/configuration.md). The HTTPS behaviour is checked on real gunicorn
behind a stand-in for a TLS-terminating proxy (the ``X-Forwarded-Proto`` header it sets),
and the default (the embedded default's plain HTTP) on the live test server.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet

from tests.procs import LiveGateway, current_database_url, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SECURE_", "DJANGO_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
            "DATABASE_URL": current_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "SECRET_KEY": secrets.token_urlsafe(48),
            "JWT_SIGNING_KEY": secrets.token_urlsafe(48),
            "KEY_PEPPER": secrets.token_urlsafe(48),
            "GATEWAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "ALLOWED_HOSTS": "gateway.example.com",
            "GATEWAY_VAR_DIR": str(tmp_path / "var"),
            "DEBUG": "0",
            "GATEWAY_HTTPS": "1",
            "GATEWAY_BEHIND_TLS_PROXY": "1",
        }
    )
    env.update(extra)
    return env


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_production(tmp_path: Path) -> None:
    result = check_deploy(production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr and "security.W" not in result.stdout + result.stderr


def test_check_deploy_warns_without_https(tmp_path: Path) -> None:
    """The default does not force HTTPS (the embedded default is plain HTTP): the check says so."""
    env = production_env(tmp_path)
    del env["GATEWAY_HTTPS"]
    result = check_deploy(env)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W010"):
        assert warning in result.stderr


def test_the_default_serves_plain_http(live_server: Any) -> None:
    response = requests.get(live_server.url + "/v1/models", allow_redirects=False, timeout=10)
    assert response.status_code == 401  # reached the API: no redirect to HTTPS
    assert "strict-transport-security" not in response.headers
    login = requests.get(live_server.url + "/admin/login/", timeout=10)
    assert login.status_code == 200 and "secure" not in login.headers["set-cookie"].lower()


@pytest.fixture
def https_gunicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in production_env(tmp_path, ALLOWED_HOSTS="127.0.0.1").items():
        monkeypatch.setenv(name, value)
    server = start_gateway(tmp_path)
    try:
        server.wait_healthy()  # /healthz answers over plain HTTP: exempt from the redirect
        yield server
    finally:
        server.stop()


def test_behind_a_tls_proxy(https_gunicorn: LiveGateway) -> None:
    url = https_gunicorn.url
    plain = requests.get(url + "/v1/models", allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["location"].startswith("https://")

    proxied = {"X-Forwarded-Proto": "https"}
    api = requests.get(url + "/v1/models", headers=proxied, allow_redirects=False, timeout=10)
    assert api.status_code == 401  # reached the API over "HTTPS"
    hsts = api.headers["strict-transport-security"]
    assert "max-age=31536000" in hsts and "includeSubDomains" in hsts and "preload" in hsts

    login = requests.get(url + "/admin/login/", headers=proxied, allow_redirects=False, timeout=10)
    assert login.status_code == 200
    assert "secure" in login.headers["set-cookie"].lower()  # the CSRF cookie
    assert requests.get(url + "/healthz", allow_redirects=False, timeout=10).status_code == 200
