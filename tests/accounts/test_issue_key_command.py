"""``manage.py issue_key``: the secret is the last line, works against the gateway, is not stored."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from typing import Any

import openai
import pytest
from django.core.management import CommandError, call_command

from accounts.models import ClientKey, Team

pytestmark = pytest.mark.django_db(transaction=True)


def issue(*args: str) -> list[str]:
    out = StringIO()
    call_command("issue_key", *args, stdout=out)
    return out.getvalue().rstrip("\n").split("\n")


def test_issue_key_prints_a_working_secret_last(
    make_provider: Any, make_deployment: Any, redis_client: Any, openai_for: Any
) -> None:
    provider = make_provider("mock", kind="mock", vendor="mock", api_key="", options={"reply": "ok"})
    make_deployment(provider, "mock-gpt")
    make_deployment(provider, "mock-other")

    lines = issue("--name", "ci-runner", "--team", "platform", "--models", "mock-gpt, ")
    secret = lines[-1]
    assert secret.startswith("gwk_") and secret.strip() == secret and " " not in secret
    assert all(secret not in line for line in lines[:-1])

    key = ClientKey.objects.get(name="ci-runner")
    assert key.team == Team.objects.get(name="platform")
    assert key.allowed_models == ["mock-gpt"]
    assert all(secret not in str(value) for value in ClientKey.objects.filter(pk=key.pk).values().get().values())

    client = openai_for(secret)
    reply = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "ok"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="mock-other", messages=[{"role": "user", "content": "Hi"}])


def test_issue_key_reuses_the_team_and_validates(db: None) -> None:
    issue("--name", "a", "--team", "platform")
    issue("--name", "b", "--team", "platform", "--budget", "12.50", "--expires", "2030-01-01T00:00:00Z")
    assert Team.objects.filter(name="platform").count() == 1
    assert ClientKey.objects.get(name="b").budget_usd == Decimal("12.50")
    issue("--name", "tiny", "--budget", "0.005", "--budget-period", "day", "--budget-when-redis-down", "open")
    tiny = ClientKey.objects.get(name="tiny")
    assert tiny.budget_usd == Decimal("0.005") and tiny.budget_when_redis_down == "open"
    with pytest.raises(CommandError, match="at most 6 decimals"):
        issue("--name", "c", "--budget", "0.0000001")
    with pytest.raises(CommandError, match="--budget"):
        issue("--name", "c", "--budget", "lots")
    with pytest.raises(CommandError, match="--expires"):
        issue("--name", "c", "--expires", "next tuesday")
    assert not ClientKey.objects.filter(name="c").exists()
