"""Rate limits against a live gateway: OpenAI's headers and 429, the openai SDK's own retries,
tokens charged before and settled after, teams, deployments at their limit, the context
window, the embedded default, and one Redis round trip with a budget."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import requests
from django.conf import settings

from tests.fakes.openai_server import FakeOpenAI
from tests.procs import PrivateRedis
from usage.ratelimits import format_duration, local_windows

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(autouse=True)
def _fresh_windows() -> Iterator[None]:
    local_windows.clear()
    yield
    local_windows.clear()


@pytest.fixture
def route(
    fake_openai: FakeOpenAI, make_provider: Any, make_deployment: Any, make_price: Any, redis_client: Any
) -> dict[str, Any]:
    provider = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
    deployment = make_deployment(provider, MODEL)
    make_price("openai", MODEL, "0.15", "0.60")
    return {"fake": fake_openai, "provider": provider, "deployment": deployment}


def _post(gateway_url: str, secret: str, **body: Any) -> requests.Response:
    return requests.post(
        gateway_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, **body},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


def _tokens_counted(redis_client: Any, key_id: int) -> int:
    """The key's token window: its buckets, which must agree with the running sum."""
    base = f"{{gw}}:rl:key:{key_id}:t"
    buckets = sum(
        int(redis_client.get(k)) for k in redis_client.keys(base + ":*") if k.decode().rsplit(":", 1)[1].isdigit()
    )
    assert int(redis_client.get(base + ":sum")) == buckets
    return buckets


def _window(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    monkeypatch.setitem(settings.GATEWAY, "RATE_LIMIT_WINDOW_SECONDS", seconds)


def test_duration_format_is_openais() -> None:
    assert format_duration(20) == "20ms"
    assert format_duration(1000) == "1s"
    assert format_duration(17_500) == "17.5s"
    assert format_duration(360_000) == "6m0s"
    assert format_duration(3_600_000) == "1h0m0s"


def test_requests_per_minute_headers_and_openai_shaped_429(
    route: dict[str, Any], issue_key: Any, gateway_url: str
) -> None:
    _, secret = issue_key(rpm_limit=2)
    first = _post(gateway_url, secret)
    second = _post(gateway_url, secret)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in first.headers  # no token limit on this key

    refused = _post(gateway_url, secret)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "requests per minute" in error["message"] and "Limit 2" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert 0 < int(refused.headers["retry-after-ms"]) <= 60_000
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(route["fake"].received) == 2  # the refused request never reached the provider


def test_the_openai_sdk_retries_after_the_window_and_succeeds(
    route: dict[str, Any], issue_key: Any, gateway_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _window(monkeypatch, 1.2)  # a short window, so the SDK's wait (Retry-After) is short too
    _, secret = issue_key(rpm_limit=1)
    statuses: list[int] = []
    http_client = httpx2.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
    client = openai.OpenAI(api_key=secret, base_url=gateway_url + "/v1", max_retries=5, http_client=http_client)
    client.chat.completions.create(model=MODEL, messages=HELLO)
    completion = client.chat.completions.create(model=MODEL, messages=HELLO)  # refused, retried by the SDK
    assert completion.choices[0].message.content
    assert statuses[0] == 200 and statuses[-1] == 200
    assert 429 in statuses  # the SDK saw the limit and waited it out on its own

    strict = openai.OpenAI(api_key=secret, base_url=gateway_url + "/v1", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        strict.chat.completions.create(model=MODEL, messages=HELLO)


def test_tokens_are_charged_before_and_settled_with_the_real_usage(
    route: dict[str, Any], issue_key: Any, gateway_url: str, redis_client: Any
) -> None:
    row, secret = issue_key(tpm_limit=1000)
    first = _post(gateway_url, secret)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    charged_input = 1000 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert 0 < charged_input < 50  # the gateway's count of "Hello" with its framing
    # settled: the fake answered 12 prompt + 7 completion tokens
    counted = _tokens_counted(redis_client, row.id)
    assert counted == 19
    second = _post(gateway_url, secret)
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 1000 - 19 - charged_input


def test_a_stream_is_charged_its_input_first_and_its_output_when_it_ends(
    route: dict[str, Any], issue_key: Any, gateway_url: str, redis_client: Any
) -> None:
    row, secret = issue_key(tpm_limit=1000)
    with requests.post(
        gateway_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, "stream": True},
        headers={"Authorization": f"Bearer {secret}"},
        stream=True,
        timeout=30,
    ) as response:
        assert response.status_code == 200
        charged_input = 1000 - int(response.headers["x-ratelimit-remaining-tokens"])
        body = b"".join(response.iter_content(None))
    assert b"[DONE]" in body
    counted = _tokens_counted(redis_client, row.id)
    assert counted != charged_input  # settled to the provider's usage (12 prompt + 4 completion)
    assert counted == 16


def test_request_larger_than_the_token_limit_is_not_retryable(
    route: dict[str, Any], issue_key: Any, gateway_url: str
) -> None:
    _, secret = issue_key(tpm_limit=5)
    response = _post(gateway_url, secret, messages=[{"role": "user", "content": "word " * 50}])
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    assert "Request too large" in response.json()["error"]["message"]


def test_a_team_limit_is_shared_by_its_keys(route: dict[str, Any], issue_key: Any, gateway_url: str) -> None:
    from accounts.services import team_create

    team = team_create(name="search", rpm_limit=3)
    _, one = issue_key(name="one", team=team)
    _, two = issue_key(name="two", team=team, rpm_limit=100)
    assert [_post(gateway_url, s).status_code for s in (one, two, one)] == [200, 200, 200]
    refused = _post(gateway_url, two)
    assert refused.status_code == 429
    assert "team 'search'" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-limit-requests"] == "3"  # the tightest limit is reported


def test_a_deployment_at_its_limit_is_skipped_and_explain_shows_the_headroom(
    route: dict[str, Any], make_deployment: Any, issue_key: Any, gateway_url: str
) -> None:
    from providers.models import Deployment

    Deployment.objects.filter(pk=route["deployment"].pk).update(rpm_limit=1, priority=1)
    make_deployment(route["provider"], MODEL, name="spare", priority=2, rpm_limit=1, tpm_limit=100_000)
    from routing.config.cache import config_cache

    config_cache.invalidate_local()
    _, secret = issue_key()
    first = _post(gateway_url, secret)
    assert first.headers["x-gateway-deployment"] == "up-gpt-4o-mini"
    explain = requests.post(
        gateway_url + "/v1/routing/explain",
        json={"model": MODEL, "messages": HELLO},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    ).json()
    by_name = {c["deployment"]: c for c in explain["candidates"]}
    assert by_name["up-gpt-4o-mini"]["rate_limit"]["requests_remaining"] == 0
    assert by_name["up-gpt-4o-mini"]["rate_limit"]["at_limit"] is True
    assert by_name["up-gpt-4o-mini"]["will_try"] is False
    assert by_name["spare"]["rate_limit"]["tpm_limit"] == 100_000
    assert by_name["spare"]["rate_limit"]["requests_remaining"] == 1
    assert 0 < by_name["spare"]["rate_limit"]["tokens_remaining"] <= 100_000
    assert explain["chosen"] == "spare"
    second = _post(gateway_url, secret)
    assert second.status_code == 200
    assert second.headers["x-gateway-deployment"] == "spare"  # skipped before sending, not failed over

    busy = _post(gateway_url, secret)
    assert busy.status_code == 429
    assert busy.json()["error"]["code"] == "deployments_at_capacity"
    assert int(busy.headers["retry-after"]) >= 1
    assert len(route["fake"].received) == 2


def test_candidates_whose_context_window_is_too_small_are_skipped(
    route: dict[str, Any], make_deployment: Any, issue_key: Any, gateway_url: str
) -> None:
    from providers.models import Deployment

    Deployment.objects.filter(pk=route["deployment"].pk).update(context_window=100, priority=1)
    make_deployment(route["provider"], MODEL, name="long", priority=2, context_window=128_000)
    _, secret = issue_key()
    response = _post(gateway_url, secret, max_tokens=500)
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == "long"
    assert response.headers["x-gateway-attempts"] == "1"  # skipped, not tried and failed
    explain = requests.post(
        gateway_url + "/v1/routing/explain",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 500},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    ).json()
    assert explain["excluded"] == [
        {"deployment": "up-gpt-4o-mini", "provider": "up", "reason": "context_window_exceeded"}
    ]
    small = _post(gateway_url, secret, max_tokens=50)  # fits both: the first is tried first again
    assert small.headers["x-gateway-deployment"] == "up-gpt-4o-mini"
    too_big = _post(gateway_url, secret, max_tokens=200_000)
    assert too_big.status_code == 400
    assert too_big.json()["error"]["code"] == "context_length_exceeded"


def test_embedded_default_limits_in_process(
    settings: Any, make_provider: Any, make_deployment: Any, issue_key: Any, gateway_url: str
) -> None:
    from gatewaysite.redis_client import reset_redis
    from usage.recorder import reset_recorder

    settings.REDIS_URL = ""
    reset_redis()
    reset_recorder()
    try:
        provider = make_provider("m", kind="mock", vendor="mock")
        make_deployment(provider, "mock-gpt")
        _, secret = issue_key(rpm_limit=2, tpm_limit=10_000)
        statuses = [
            requests.post(
                gateway_url + "/v1/chat/completions",
                json={"model": "mock-gpt", "messages": HELLO},
                headers={"Authorization": f"Bearer {secret}"},
                timeout=30,
            )
            for _ in range(3)
        ]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        assert statuses[1].headers["x-ratelimit-remaining-requests"] == "0"
        assert "retry-after" in statuses[2].headers
    finally:
        reset_redis()
        reset_recorder()


def test_budget_and_rate_limit_take_one_redis_round_trip(
    tmp_path: Path, settings: Any, route: dict[str, Any], issue_key: Any, gateway_url: str
) -> None:
    """On a Redis of its own, the admission of a budgeted, rate-limited request is one EVALSHA
    (rate limits and budget together); the record is the recorder's own, as for every request."""
    import redis

    from gatewaysite.redis_client import reset_redis
    from usage import budgets
    from usage.recorder import reset_recorder

    private = PrivateRedis(tmp_path / "redis", durable=False).start()
    original = settings.REDIS_URL
    settings.REDIS_URL = private.url
    reset_redis()
    reset_recorder()
    budgets._scripts.clear()
    try:
        _, secret = issue_key(rpm_limit=100, tpm_limit=100_000, budget_usd=Decimal("5"), budget_period="day")
        _post(gateway_url, secret, max_tokens=20)  # loads the scripts, seeds the budget counter
        stats = redis.Redis.from_url(private.url)
        stats.config_resetstat()
        for _ in range(5):
            assert _post(gateway_url, secret, max_tokens=20).status_code == 200
        commands = stats.info("commandstats")
        # per request: one admission script before the call, and the recorder's batch script
        # after it (one batch per request here, as they are sent one after another)
        assert commands["cmdstat_evalsha"]["calls"] == 5 + 5
        assert "cmdstat_eval" not in commands  # (commands run inside the script are counted by name too)
    finally:
        settings.REDIS_URL = original
        reset_redis()
        reset_recorder()
        budgets._scripts.clear()
        private.stop()


def test_the_window_slides_by_the_second_in_redis(redis_client: Any) -> None:
    """The admission script at chosen moments (no sleeping): buckets leave the window one
    second at a time, the running sum follows, and an idle counter starts from its buckets."""
    from usage import budgets
    from usage.ratelimits import REQUESTS, Limit, script_call

    limit = Limit("key", "k", "{gw}:rl:key:424242:r", REQUESTS, 3)
    start = 1_700_000_000_000  # a whole second, in ms

    def admit_at(ms: int) -> list[int]:
        call = script_call(limits=[limit], amounts=[1], now_ms=ms)
        return budgets.run_admission_script(redis_client, call.keys, call.args, [], [], None)  # type: ignore[arg-type]

    assert [admit_at(start + i)[0] for i in (0, 500, 20_000)] == [0, 0, 0]  # bucket 0 holds 2, bucket 20 one
    refused = admit_at(start + 30_000)
    assert refused[:2] == [1, 1] and refused[3] == 3
    assert refused[2] == 30_000  # bucket 0 leaves the window at start + 60 s
    assert admit_at(start + 59_999)[0] == 1
    admitted = admit_at(start + 60_000)
    assert admitted[0] == 0 and admitted[3] == 1  # only bucket 20 left in the window
    assert admit_at(start + 60_500)[0] == 0
    assert admit_at(start + 61_000)[0] == 1  # 20, 60, 60: full again
    assert admit_at(start + 80_000)[3] == 2  # bucket 20 left
    assert admit_at(start + 500_000)[3] == 0  # long idle: recomputed from the (empty) window
    assert int(redis_client.get(limit.base + ":sum")) == 1


def test_with_redis_down_each_process_keeps_limiting(
    tmp_path: Path, settings: Any, route: dict[str, Any], issue_key: Any, gateway_url: str
) -> None:
    """A Redis the test stops: the limits still hold, counted in this process."""
    from gatewaysite.redis_client import reset_redis
    from usage.recorder import reset_recorder

    private = PrivateRedis(tmp_path / "redis", durable=False).start()
    original = settings.REDIS_URL
    settings.REDIS_URL = private.url
    reset_redis()
    reset_recorder()
    try:
        _, secret = issue_key(rpm_limit=2)
        assert _post(gateway_url, secret).status_code == 200  # counted in Redis
        private.stop()
        statuses = [_post(gateway_url, secret).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]  # this process's own window: the limit again, no more
    finally:
        settings.REDIS_URL = original
        reset_redis()
        reset_recorder()
        private.stop()
