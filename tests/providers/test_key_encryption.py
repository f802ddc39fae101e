"""Provider API keys are encrypted at rest; the adapters still send the right key upstream."""

from __future__ import annotations

import subprocess
from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.test import override_settings

from providers.encryption import UndecryptableSecret, derived_key
from providers.models import Provider

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-live-8fK2pQ9xW4mZ7vB1nR6tY3cH5jL0aSdE"
HELLO = [{"role": "user", "content": "Hello"}]


def leaks(text: str, secret: str = KEY) -> bool:
    lowered, key = text.lower(), secret.lower()
    return any(key[i : i + 12] in lowered for i in range(len(key) - 11))


def stored(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM providers_provider WHERE name = %s", [name])
        return cursor.fetchone()[0]


def command(*args: str) -> str:
    out = StringIO()
    call_command("provider_keys", *args, stdout=out)
    return out.getvalue()


def test_a_database_dump_holds_no_provider_key(make_provider: Any, tmp_path: Any) -> None:
    make_provider("stored", kind="openai", base_url="https://api.example.com/v1", api_key=KEY)
    make_provider("from-env", kind="openai", base_url="https://api.example.com/v1", api_key="", api_key_env="X_KEY")

    raw = stored("stored")
    assert raw.startswith("gAAAAA") and not leaks(raw)  # a Fernet token
    assert stored("from-env") == ""
    assert Provider.objects.get(name="stored").api_key == KEY

    db = connection.settings_dict
    dump = subprocess.run(
        ["pg_dump", "-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], "--no-owner", db["NAME"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "stored" in dump and raw in dump  # the dump has the row, encrypted
    assert not leaks(dump)

    exported = tmp_path / "gateway.yaml"
    call_command("gateway_config", "export", str(exported), stdout=StringIO())
    assert "api_key_stored: true" in exported.read_text() and not leaks(exported.read_text())


def test_the_adapter_sends_the_decrypted_key_upstream(
    fake_openai: Any, make_provider: Any, make_deployment: Any, issue_key: Any, openai_for: Any, redis_client: Any
) -> None:
    provider = make_provider("up", base_url=fake_openai.url + "/v1", api_key=KEY)
    make_deployment(provider, "gpt-4o-mini")
    _, secret = issue_key()
    reply = openai_for(secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert reply.choices[0].message.content
    assert fake_openai.received[-1].headers["authorization"] == f"Bearer {KEY}"


def test_api_key_env_still_wins(
    fake_openai: Any,
    make_provider: Any,
    make_deployment: Any,
    issue_key: Any,
    openai_for: Any,
    redis_client: Any,
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("UPSTREAM_TEST_KEY", "sk-from-the-environment")
    provider = make_provider("up", base_url=fake_openai.url + "/v1", api_key=KEY, api_key_env="UPSTREAM_TEST_KEY")
    make_deployment(provider, "gpt-4o-mini")
    _, secret = issue_key()
    openai_for(secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert fake_openai.received[-1].headers["authorization"] == "Bearer sk-from-the-environment"


def test_the_migration_encrypts_existing_rows_and_reverses() -> None:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate([("providers", "0002_seed_pricing")])
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO providers_provider (name, kind, vendor, base_url, api_key, api_key_env, options, "
                "connect_timeout, read_timeout, enabled, created_at, updated_at) VALUES "
                "('legacy', 'openai', '', 'https://x.test/v1', %s, '', '{}', 5, 120, true, now(), now())",
                [KEY],
            )
        assert stored("legacy") == KEY  # plain text, as before

        executor = MigrationExecutor(connection)
        executor.migrate([("providers", "0004_sec_encrypt_api_keys")])
        once = stored("legacy")
        assert once.startswith("gAAAAA") and not leaks(once)
        assert Provider.objects.get(name="legacy").api_key == KEY

        executor = MigrationExecutor(connection)
        executor.migrate([("providers", "0002_seed_pricing")])
        assert stored("legacy") == KEY
    finally:
        MigrationExecutor(connection).migrate(leaves)
    assert Provider.objects.get(name="legacy").api_key == KEY


def test_rotation_re_encrypts_with_the_newest_key(make_provider: Any) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[old]):
        make_provider("a", base_url="https://a.test", api_key=KEY)
        make_provider("b", base_url="https://b.test", api_key=KEY + "-b")
    assert Fernet(old).decrypt(stored("a").encode()).decode() == KEY

    with override_settings(GATEWAY_ENCRYPTION_KEYS=[new, old]):
        assert Provider.objects.get(name="a").api_key == KEY  # the old key still decrypts
        assert "a: key 2" in command("status")
        assert "Re-encrypted 2" in command("rotate")
        status = command("status")
        assert "a: key 1 (current)" in status and "0 on an older key" in status

    assert Fernet(new).decrypt(stored("a").encode()).decode() == KEY
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[new]):  # the old key can go
        assert Provider.objects.get(name="b").api_key == KEY + "-b"

    with override_settings(GATEWAY_ENCRYPTION_KEYS=[old]):  # only the retired key: loud, not a silent empty key
        with pytest.raises(UndecryptableSecret, match="GATEWAY_ENCRYPTION_KEYS"):
            Provider.objects.get(name="a")
        with pytest.raises(CommandError, match="a, b"):
            command("status")


def test_without_configured_keys_the_key_derived_from_secret_key_encrypts(make_provider: Any, settings: Any) -> None:
    settings.GATEWAY_ENCRYPTION_KEYS = []
    make_provider("a", base_url="https://a.test", api_key=KEY)
    derived = command("derived-key").strip()
    assert derived == derived_key(settings.SECRET_KEY)
    assert Fernet(derived).decrypt(stored("a").encode()).decode() == KEY
    assert derived_key(settings.SECRET_KEY + "x") != derived


def test_a_malformed_encryption_key_fails_the_system_check() -> None:
    new = command("generate").strip()
    Fernet(new)  # a usable key
    with (
        override_settings(GATEWAY_ENCRYPTION_KEYS=[new, "not-a-fernet-key"]),
        pytest.raises(SystemCheckError, match="entry 2 is not a Fernet key"),
    ):
        call_command("check", stdout=StringIO(), stderr=StringIO())


def test_the_gateway_routes_with_keys_rotated_under_it(
    fake_openai: Any, make_provider: Any, make_deployment: Any, issue_key: Any, openai_for: Any, redis_client: Any
) -> None:
    """A rotation does not change the plain key: requests keep reaching the upstream with it."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[old]):
        provider = make_provider("up", base_url=fake_openai.url + "/v1", api_key=KEY)
        make_deployment(provider, "gpt-4o-mini")
    _, secret = issue_key()
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[new, old]):
        command("rotate")
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[new]):
        from routing.config.cache import config_cache

        config_cache.invalidate_local()  # a restart with the new list: the snapshot is read again
        openai_for(secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert fake_openai.received[-1].headers["authorization"] == f"Bearer {KEY}"
