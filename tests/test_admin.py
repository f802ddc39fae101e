"""The operator's admin pages: keys, teams, providers, deployments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from accounts.keys import verify_key
from accounts.models import ClientKey, Team
from providers.models import Deployment, Provider

pytestmark = pytest.mark.django_db

SECRET_RE = re.compile(r"gwk_[a-z0-9]{8}_[A-Za-z0-9_-]{20,}")
STORED_KEY = "sk-stored-provider-key-0123456789"


@pytest.fixture
def data(make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any) -> dict[str, Any]:
    team = Team.objects.create(name="research")
    provider = make_provider("openai", base_url="https://api.openai.com/v1", vendor="openai", api_key=STORED_KEY)
    priced = make_deployment(provider, "gpt-4o")
    unpriced = make_deployment(provider, "gpt-4o-mini", name="openai-unpriced")
    make_price("openai", "gpt-4o", "2.50", "10.00")
    key, _ = issue_key("billing", team=team, allowed_models=["gpt-4o"])
    return {"team": team, "provider": provider, "priced": priced, "unpriced": unpriced, "key": key}


PAGES = [
    "/admin/",
    "/admin/accounts/clientkey/",
    "/admin/accounts/clientkey/add/",
    "/admin/accounts/clientkey/?status=active&q=billing",
    "/admin/accounts/clientkey/?status=revoked&team__id__exact=1",
    "/admin/accounts/team/",
    "/admin/accounts/team/add/",
    "/admin/accounts/team/?q=research&budget_period__exact=month",
    "/admin/providers/provider/",
    "/admin/providers/provider/add/",
    "/admin/providers/provider/?kind__exact=openai&enabled__exact=1&q=open",
    "/admin/providers/deployment/",
    "/admin/providers/deployment/add/",
    "/admin/providers/deployment/?priced=no&enabled__exact=1&q=gpt",
    "/admin/providers/deployment/?o=9",
]


@pytest.mark.parametrize("url", PAGES)
def test_pages_render(admin_client: Client, data: dict[str, Any], url: str) -> None:
    response = admin_client.get(url)
    assert response.status_code == 200, url
    assert STORED_KEY not in response.content.decode()


def test_change_pages_render(admin_client: Client, data: dict[str, Any]) -> None:
    for url in (
        f"/admin/accounts/clientkey/{data['key'].pk}/change/",
        f"/admin/accounts/team/{data['team'].pk}/change/",
        f"/admin/providers/provider/{data['provider'].pk}/change/",
        f"/admin/providers/deployment/{data['priced'].pk}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url


# --- provider credentials ---------------------------------------------------------------


def provider_post(provider: Provider, **overrides: Any) -> dict[str, Any]:
    form = {
        "name": provider.name,
        "kind": provider.kind,
        "vendor": provider.vendor,
        "base_url": provider.base_url,
        "api_key": "",
        "api_key_env": provider.api_key_env,
        "options": "{}",
        "connect_timeout": "5.0",
        "read_timeout": "120.0",
        "response_timeout": "600",
        "first_chunk_timeout": "120",
        "stream_idle_timeout": "60",
        "enabled": "on",
        "deployments-TOTAL_FORMS": "0",
        "deployments-INITIAL_FORMS": "0",
        "deployments-MIN_NUM_FORMS": "0",
        "deployments-MAX_NUM_FORMS": "1000",
    }
    form.update(overrides)
    return form


def test_provider_key_is_write_only(admin_client: Client, data: dict[str, Any]) -> None:
    provider = data["provider"]
    url = f"/admin/providers/provider/{provider.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert STORED_KEY not in page
    assert 'type="password"' in page and 'name="api_key"' in page
    assert "stored key (hidden)" in page
    assert STORED_KEY not in admin_client.get("/admin/providers/provider/").content.decode()

    # blank keeps the stored key
    response = admin_client.post(url, provider_post(provider, read_timeout="60"))
    assert response.status_code == 302, response.content.decode()[:2000]
    provider.refresh_from_db()
    assert provider.api_key == STORED_KEY and provider.read_timeout == 60

    # a typed key replaces it, and is not rendered back, not even in the history
    response = admin_client.post(url, provider_post(provider, api_key="sk-new-key-987654321"))
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == "sk-new-key-987654321"
    assert "sk-new-key-987654321" not in admin_client.get(url).content.decode()
    assert "sk-new-key-987654321" not in admin_client.get(url + "../history/").content.decode()

    # the checkbox clears it
    response = admin_client.post(url, provider_post(provider, clear_api_key="on"))
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == ""


def test_provider_form_errors_do_not_echo_the_key(admin_client: Client, data: dict[str, Any]) -> None:
    provider = data["provider"]
    url = f"/admin/providers/provider/{provider.pk}/change/"
    response = admin_client.post(url, provider_post(provider, api_key="sk-typed-then-invalid", connect_timeout="-1"))
    assert response.status_code == 200  # the form comes back with an error
    assert "sk-typed-then-invalid" not in response.content.decode()
    assert "Timeouts must be positive" in response.content.decode()
    provider.refresh_from_db()
    assert provider.api_key == STORED_KEY


def test_provider_add_with_env_credentials(admin_client: Client, db: None) -> None:
    response = admin_client.post(
        "/admin/providers/provider/add/",
        {
            "name": "groq",
            "kind": "openai",
            "vendor": "groq",
            "base_url": "https://api.groq.com/openai/v1",
            "api_key": "",
            "api_key_env": "GROQ_API_KEY_FOR_TEST",
            "options": "{}",
            "connect_timeout": "5",
            "read_timeout": "120",
            "response_timeout": "600",
            "first_chunk_timeout": "120",
            "stream_idle_timeout": "60",
            "enabled": "on",
            "deployments-TOTAL_FORMS": "1",
            "deployments-INITIAL_FORMS": "0",
            "deployments-MIN_NUM_FORMS": "0",
            "deployments-MAX_NUM_FORMS": "1000",
            "deployments-0-name": "groq-llama",
            "deployments-0-model_name": "llama-3.1-70b",
            "deployments-0-provider_model": "llama-3.1-70b-versatile",
            "deployments-0-weight": "1",
            "deployments-0-priority": "100",
            "deployments-0-enabled": "on",
        },
        follow=True,
    )
    assert response.status_code == 200
    provider = Provider.objects.get(name="groq")
    assert provider.api_key == "" and provider.api_key_env == "GROQ_API_KEY_FOR_TEST"
    assert Deployment.objects.get(name="groq-llama").provider == provider
    assert "is not set in this process" in response.content.decode()


# --- deployments: the priced flag --------------------------------------------------------


def test_unpriced_deployments_are_flagged(admin_client: Client, data: dict[str, Any]) -> None:
    page = admin_client.get("/admin/providers/deployment/").content.decode()
    assert "1 enabled deployment(s) have no price in effect" in page
    unpriced_only = admin_client.get("/admin/providers/deployment/?priced=no").content.decode()
    assert "openai-unpriced" in unpriced_only and "openai-gpt-4o<" not in unpriced_only
    priced_only = admin_client.get("/admin/providers/deployment/?priced=yes").content.decode()
    assert "openai-gpt-4o" in priced_only and "openai-unpriced" not in priced_only
    # the provider page's inline shows the same flag
    inline = admin_client.get(f"/admin/providers/provider/{data['provider'].pk}/change/").content.decode()
    assert inline.count('alt="False"') >= 1 and inline.count('alt="True"') >= 1


# --- client keys -----------------------------------------------------------------------------


def test_key_add_shows_the_secret_once(admin_client: Client, data: dict[str, Any]) -> None:
    response = admin_client.post(
        "/admin/accounts/clientkey/add/",
        {
            "name": "new-service",
            "owner": "alice",
            "team": str(data["team"].pk),
            "allowed_models": "gpt-4o, gpt-4o-mini,  gpt-4o",
            "strategy": "",
            "budget_usd": "25.00",
            "budget_period": "day",
            "expires_at_0": "",
            "expires_at_1": "",
            "metadata": '{"service": "billing"}',
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    secrets_shown = set(SECRET_RE.findall(page))
    assert len(secrets_shown) == 1
    (secret,) = secrets_shown
    assert "no-store" in response["Cache-Control"]

    key = ClientKey.objects.get(name="new-service")
    assert verify_key(secret, key.secret_hash)
    assert secret.startswith(f"gwk_{key.prefix}_")
    assert key.allowed_models == ["gpt-4o", "gpt-4o-mini"]
    assert key.team == data["team"] and key.owner == "alice" and key.budget_period == "day"
    assert key.metadata == {"service": "billing"}
    # the database holds no secret
    assert all(secret not in str(value) for value in ClientKey.objects.filter(pk=key.pk).values().get().values())
    # never shown again
    for url in (f"/admin/accounts/clientkey/{key.pk}/change/", "/admin/accounts/clientkey/"):
        again = admin_client.get(url).content.decode()
        assert secret not in again and secret.split("_", 2)[2] not in again
        assert key.secret_hash not in again


def test_key_form_validates(admin_client: Client, db: None) -> None:
    response = admin_client.post(
        "/admin/accounts/clientkey/add/",
        {"name": "x", "allowed_models": "", "strategy": "no-such", "budget_period": "month", "metadata": "[1]"},
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Select a valid choice" in page and "Metadata must be a JSON object" in page
    assert not ClientKey.objects.exists()


def test_key_edit_keeps_the_hash_and_edits_models(admin_client: Client, data: dict[str, Any]) -> None:
    key = data["key"]
    before = key.secret_hash
    response = admin_client.post(
        f"/admin/accounts/clientkey/{key.pk}/change/",
        {
            "name": "billing",
            "owner": "",
            "team": "",
            "allowed_models": "gpt-4o-mini",
            "strategy": "",
            "budget_usd": "",
            "budget_period": "month",
            "expires_at_0": "",
            "expires_at_1": "",
            "metadata": "{}",
        },
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.allowed_models == ["gpt-4o-mini"] and key.team is None
    assert key.secret_hash == before and not key.revoked


def test_revoke_action(admin_client: Client, data: dict[str, Any], issue_key: Any) -> None:
    other, _ = issue_key("other")
    response = admin_client.post(
        "/admin/accounts/clientkey/",
        {"action": "revoke_selected", "_selected_action": [str(data["key"].pk), str(other.pk)]},
        follow=True,
    )
    assert "Revoked 2 key(s)" in response.content.decode()
    for key in ClientKey.objects.all():
        assert key.revoked and key.revoked_at is not None
    assert "revoked" in admin_client.get("/admin/accounts/clientkey/?status=revoked").content.decode()


def test_revoke_from_the_change_form_is_final(admin_client: Client, data: dict[str, Any]) -> None:
    key = data["key"]
    url = f"/admin/accounts/clientkey/{key.pk}/change/"
    form = {
        "name": "billing",
        "owner": "",
        "team": str(data["team"].pk),
        "allowed_models": "gpt-4o",
        "strategy": "",
        "budget_usd": "",
        "budget_period": "month",
        "expires_at_0": "",
        "expires_at_1": "",
        "revoked": "on",
        "metadata": "{}",
    }
    assert admin_client.post(url, form).status_code == 302
    key.refresh_from_db()
    assert key.revoked and key.revoked_at is not None
    # once revoked, the flag is read-only: posting without it does not bring the key back
    form.pop("revoked")
    assert admin_client.post(url, form).status_code == 302
    key.refresh_from_db()
    assert key.revoked


def test_keys_cannot_be_deleted(admin_client: Client, data: dict[str, Any]) -> None:
    response = admin_client.get(f"/admin/accounts/clientkey/{data['key'].pk}/delete/")
    assert response.status_code == 403


# --- the production static set-up --------------------------------------------------------------


def test_admin_is_styled_with_collected_static(admin_user: Any, tmp_path: Path) -> None:
    """What `make run` serves: collectstatic's hashed, compressed files through WhiteNoise."""
    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    with override_settings(STATIC_ROOT=tmp_path / "static", STORAGES=storages):
        call_command("collectstatic", "--no-input", verbosity=0)
        client = Client()
        client.force_login(admin_user)
        page = client.get("/admin/providers/provider/").content.decode()
        css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page)
        assert css, "the admin links the hashed stylesheet"
        response = client.get(css.group(1))
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/css")
        assert b"".join(response.streaming_content)


def test_key_issued_from_a_related_popup_can_be_selected(admin_client: Client, db: None) -> None:
    response = admin_client.post(
        "/admin/accounts/clientkey/add/?_to_field=id&_popup=1",
        {"_popup": "1", "_to_field": "id", "name": "from-rule", "budget_period": "month", "metadata": "{}"},
    )
    assert response.status_code == 200
    page = response.content.decode()
    key = ClientKey.objects.get(name="from-rule")
    assert len(set(SECRET_RE.findall(page))) == 1
    assert "use this key" in page and f"&quot;value&quot;: &quot;{key.pk}&quot;" in page
    assert "popup_response.js" in page
