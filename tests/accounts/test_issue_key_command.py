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
    with pytest.raises(CommandError, match="no more than 6 decimal places"):
        issue("--name", "c", "--budget", "0.0000001")
    with pytest.raises(CommandError, match="--budget"):
        issue("--name", "c", "--budget", "lots")
    with pytest.raises(CommandError, match="--expires"):
        issue("--name", "c", "--expires", "next tuesday")
    assert not ClientKey.objects.filter(name="c").exists()


def _too_many_decimals() -> str:
    places = ClientKey._meta.get_field("budget_usd").decimal_places
    return "1." + "1" * (places + 1)


def _too_many_digits() -> str:
    field = ClientKey._meta.get_field("budget_usd")
    return "9" * (field.max_digits - field.decimal_places + 1)


INVALID = [
    (["--budget", "lots"], "--budget"),
    (["--budget", "-5"], "--budget"),
    (["--budget", "NaN"], "--budget"),
    (["--budget", "Infinity"], "--budget"),
    (["--budget", "<too many decimals>"], "decimal places"),
    (["--budget", "<too many digits>"], "--budget"),
    (["--expires", "next tuesday"], "--expires"),
    (["--expires", "2030-13-45T00:00:00Z"], "--expires"),
    (["--strategy", "fastest"], "--strategy"),
    (["--name", "x" * 101], "name"),
    (["--owner", "x" * 201], "owner"),
    (["--team", "t" * 101], "--team"),
]


def _args(args: list[str]) -> list[str]:
    swap = {"<too many decimals>": _too_many_decimals(), "<too many digits>": _too_many_digits()}
    return [swap.get(a, a) for a in args]


@pytest.mark.parametrize(("args", "mentions"), INVALID)
def test_invalid_values_are_a_clear_command_error(args: list[str], mentions: str) -> None:
    argv = _args(args)
    if "--name" not in argv:
        argv = ["--name", "c", *argv]
    with pytest.raises(CommandError, match=mentions):
        issue(*argv)
    assert not ClientKey.objects.exists()
    assert not Team.objects.exists()


@pytest.mark.parametrize(
    "args", [["--budget", "<too many decimals>"], ["--expires", "2030-02-30T00:00:00"], ["--team", "t" * 101]]
)
def test_invalid_values_exit_non_zero_without_a_traceback(args: list[str], tmp_path: Any) -> None:
    """The real command line, as an operator runs it against the database."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "GATEWAY_VAR_DIR": str(tmp_path),
        "KEY_PEPPER": settings.KEY_PEPPER,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "issue_key", "--name", "cli", *_args(args)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("CommandError: ") and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    assert not ClientKey.objects.filter(name="cli").exists()


def test_expiry_without_an_offset_is_utc(db: None) -> None:
    issue("--name", "naive", "--expires", "2030-01-01T12:00:00")
    assert ClientKey.objects.get(name="naive").expires_at.isoformat() == "2030-01-01T12:00:00+00:00"
