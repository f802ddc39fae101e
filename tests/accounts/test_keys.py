"""Client keys against a live gateway with the openai SDK: hashed at rest, revocation,
expiry and the model allowlist."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import openai
import pytest

from accounts.keys import KEY_MARK, hash_key, key_prefix, verify_key
from accounts.models import ClientKey
from accounts.services import key_issue, key_revoke
from gatewaysite.clock import clock, now

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def mock_models(make_provider: Any, make_deployment: Any, make_price: Any, redis_client: Any) -> None:
    provider = make_provider("mock", kind="mock", vendor="mock", api_key="", options={"reply": "hi"})
    make_deployment(provider, "mock-gpt")
    make_deployment(provider, "mock-other")
    make_price("mock", "mock-gpt", "1", "2")
    make_price("mock", "mock-other", "1", "2")


def _row_values(key: ClientKey) -> list[str]:
    return [str(v) for v in ClientKey.objects.filter(pk=key.pk).values().get().values()]


def test_keys_are_hashed_at_rest(db: None) -> None:
    key, secret = key_issue(name="svc", metadata={"env": "prod"})
    assert secret.startswith(KEY_MARK) and key_prefix(secret) == key.prefix
    values = _row_values(key)
    assert all(secret not in value for value in values)
    assert all(secret.split("_", 2)[2] not in value for value in values)  # nor the random part alone
    assert key.secret_hash == hash_key(secret) and len(key.secret_hash) == 64
    assert verify_key(secret, key.secret_hash)
    assert not verify_key(secret[:-1] + ("A" if secret[-1] != "A" else "B"), key.secret_hash)


def test_a_key_works_until_revoked(mock_models: None, openai_for: Any) -> None:
    key, secret = key_issue(name="svc")
    client = openai_for(secret)
    assert client.chat.completions.create(model="mock-gpt", messages=HELLO).choices[0].message.content == "hi"
    key_revoke(key=key)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="mock-gpt", messages=HELLO)
    assert info.value.status_code == 401
    assert info.value.body["code"] == "key_revoked"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    key.refresh_from_db()
    assert key.revoked and key.revoked_at is not None


def test_an_expired_key_is_rejected(mock_models: None, openai_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, secret = key_issue(name="svc", expires_at=now() + timedelta(hours=1))
    client = openai_for(secret)
    client.chat.completions.create(model="mock-gpt", messages=HELLO)
    later = now() + timedelta(hours=2)
    monkeypatch.setattr(clock, "now", lambda: later)  # expiry needs no configuration change
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="mock-gpt", messages=HELLO)
    assert info.value.body["code"] == "key_expired"


def test_unknown_and_tampered_keys_are_rejected(mock_models: None, openai_for: Any) -> None:
    _, secret = key_issue(name="svc")
    for bad in (secret[:-2] + "zz", "gwk_nothere0_" + "x" * 43, "sk-not-a-gateway-key"):
        with pytest.raises(openai.AuthenticationError) as info:
            openai_for(bad).chat.completions.create(model="mock-gpt", messages=HELLO)
        assert info.value.body["code"] == "invalid_api_key"


def test_model_allowlist(mock_models: None, openai_for: Any) -> None:
    _, secret = key_issue(name="limited", allowed_models=["mock-gpt"])
    client = openai_for(secret)
    client.chat.completions.create(model="mock-gpt", messages=HELLO)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="mock-other", messages=HELLO)
    assert info.value.status_code == 403
    assert info.value.body["code"] == "model_not_allowed"
    assert [m.id for m in client.models.list()] == ["mock-gpt"]
    # an empty allowlist means every model
    _, open_secret = key_issue(name="open")
    assert sorted(m.id for m in openai_for(open_secret).models.list()) == ["mock-gpt", "mock-other"]


def test_allowlist_changes_apply_without_a_restart(mock_models: None, openai_for: Any) -> None:
    key, secret = key_issue(name="svc", allowed_models=["mock-gpt"])
    client = openai_for(secret)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="mock-other", messages=HELLO)
    key.allowed_models = ["mock-gpt", "mock-other"]
    key.save()
    client.chat.completions.create(model="mock-other", messages=HELLO)
