"""Property-based fuzzing of every key-authenticated JSON body, against a live gateway.

Bodies (shaped like chat requests with any field of any JSON type, arbitrary JSON, or
not JSON at all) go to ``/v1/chat/completions``, ``/v1/routing/estimate-cost`` and
``/v1/routing/explain`` on gunicorn (one gevent worker) routing to loopback providers
of each wire format (OpenAI, Anthropic, Gemini). Whatever is sent:

- the answer is never a 5xx;
- every error is OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``);
- no secret appears in any answer (headers or body): not the providers' keys, not the
  gateway's own secrets, not the client's key.

Examples are bounded and derandomized (the same examples on every run), so the test is
fast and never flaky; to search longer locally, raise ``FUZZ_EXAMPLES`` and set
``FUZZ_RANDOM=1`` for new examples on each run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI
from tests.test_hostile_input import one_worker_gateway

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # the strategies' repr is long; Hypothesis warns about it when it reports an example
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
RANDOM = os.environ.get("FUZZ_RANDOM", "") == "1"  # new examples on every run (searching locally)
PROVIDER_KEYS = {
    "openai": "sk-fuzz-openai-0123456789abcdef",
    "anthropic": "sk-ant-fuzz-0123456789abcdef",
    "gemini": "gm-fuzz-0123456789abcdef",
}
MODELS = {"fz-openai": "gpt-4o", "fz-anthropic": "claude-3-5-sonnet", "fz-gemini": "gemini-1.5-flash"}
ENDPOINTS = ("/v1/chat/completions", "/v1/routing/estimate-cost", "/v1/routing/explain")

FUZZ_SETTINGS = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- what is sent ------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


text_parts = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url", "refusal", "input_audio"])},
        optional={
            "text": st.text(max_size=30),
            "refusal": st.text(max_size=10),
            "image_url": st.fixed_dictionaries(
                {"url": st.sampled_from(["data:image/png;base64,iVBO", "https://x/y.png", "ftp://x", "data:,x"])}
            ),
        },
    ),
    max_size=3,
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=8),
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.text(min_size=1, max_size=8), "arguments": st.sampled_from(['{"a": 1}', "{}", "[1]", "{"])}
            ),
        }
    ),
    max_size=2,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])},
        optional={
            "content": st.one_of(st.text(max_size=40), text_parts, st.none()),
            "name": st.text(max_size=8),
            "tool_calls": tool_calls,
            "tool_call_id": st.text(max_size=8),
        },
    ),
    min_size=1,
    max_size=4,
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["function", "web_search"]),
            "function": st.fixed_dictionaries(
                {"name": st.text(min_size=1, max_size=8)},
                optional={
                    "description": st.text(max_size=10),
                    "parameters": st.just({"type": "object", "properties": {"a": {"type": "string"}}}),
                },
            ),
        }
    ),
    max_size=2,
)
OPTIONAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.integers(min_value=1, max_value=64),
    "max_completion_tokens": st.integers(min_value=1, max_value=64),
    "n": st.integers(min_value=1, max_value=2),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "tools": tools,
    "tool_choice": st.sampled_from(
        ["auto", "none", "required", "bogus", {"type": "function", "function": {"name": "f"}}]
    ),
    "temperature": st.floats(min_value=0, max_value=2),
    "top_p": st.floats(min_value=0, max_value=1),
    "stop": st.one_of(st.text(max_size=4), st.lists(st.text(max_size=4), max_size=3)),
    "metadata": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}, {"type": "json_schema"}]),
    "user": st.text(max_size=8),
    "parallel_tool_calls": st.booleans(),
    "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "presence_penalty": st.floats(min_value=-2, max_value=2),
    "modalities": st.sampled_from([["text"], ["text", "audio"]]),
    "logprobs": st.booleans(),
    "functions": st.just([{"name": "f"}]),
}
well_formed = st.fixed_dictionaries(
    {"model": st.sampled_from(sorted(MODELS)), "messages": messages}, optional=OPTIONAL_FIELDS
)

# Where a mutation puts a value of any JSON type: every field the gateway or an adapter reads.
MUTATION_PATHS: list[tuple[Any, ...]] = [
    ("model",),
    ("messages",),
    *((name,) for name in OPTIONAL_FIELDS),
    ("messages", 0),
    *(("messages", 0, field) for field in ("role", "content", "name", "tool_calls", "tool_call_id")),
    ("messages", 0, "content", 0),
    *(("messages", 0, "content", 0, field) for field in ("type", "text", "refusal", "image_url")),
    ("messages", 0, "tool_calls", 0),
    *(("messages", 0, "tool_calls", 0, field) for field in ("id", "type", "function")),
    *(("messages", 0, "tool_calls", 0, "function", field) for field in ("name", "arguments")),
    ("tools", 0),
    *(("tools", 0, field) for field in ("type", "function")),
    *(("tools", 0, "function", field) for field in ("name", "description", "parameters")),
    ("stream_options", "include_usage"),
    ("response_format", "type"),
]


def mutate(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """``body`` with ``value`` at ``path``, or at the deepest part of ``path`` that exists."""
    target: Any = body
    for step in path[:-1]:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            break
    else:
        last = path[-1]
        if isinstance(target, dict) or (isinstance(target, list) and isinstance(last, int) and last < len(target)):
            target[last] = value
            return body
    body[path[0]] = value
    return body


mutated = st.builds(mutate, well_formed, st.sampled_from(MUTATION_PATHS), json_values)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # the standard library writes integers of any size


bodies = st.one_of(
    well_formed.map(dumps),
    mutated.map(dumps),
    well_formed.map(dumps),
    mutated.map(dumps),
    mutated.map(dumps),
    json_values.map(dumps),
    st.binary(max_size=64),
)


# --- the gateway under test ---------------------------------------------------------------------


@pytest.fixture
def fuzz_gateway(
    tmp_path: Path, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> Iterator[dict[str, Any]]:
    fakes = {
        "openai": FakeOpenAI().start(),
        "anthropic": FakeAnthropic(api_key=PROVIDER_KEYS["anthropic"]).start(),
        "gemini": FakeGemini(api_key=PROVIDER_KEYS["gemini"]).start(),
    }
    base_urls = {
        "openai": fakes["openai"].url + "/v1",
        "anthropic": fakes["anthropic"].url,
        "gemini": fakes["gemini"].url,
    }
    for (model, provider_model), kind in zip(MODELS.items(), ("openai", "anthropic", "gemini"), strict=True):
        provider = make_provider(kind, kind=kind, base_url=base_urls[kind], api_key=PROVIDER_KEYS[kind], vendor=kind)
        make_deployment(provider, model, provider_model=provider_model)
        make_price(kind, provider_model, "1.00", "2.00")
    keys = {
        "plain": issue_key(name="plain")[1],
        "budgeted": issue_key(name="budgeted", budget_usd=Decimal("1000"), budget_period="day")[1],
        "cost": issue_key(name="cost", strategy="cost")[1],
    }
    server = one_worker_gateway(tmp_path).wait_healthy()
    session = requests.Session()
    try:
        yield {"server": server, "keys": keys, "session": session}
    finally:
        session.close()
        server.stop()
        for fake in fakes.values():
            fake.stop()


def secrets_of(gateway: dict[str, Any]) -> list[str]:
    return [
        *PROVIDER_KEYS.values(),
        *gateway["keys"].values(),
        settings.SECRET_KEY,
        settings.JWT_SIGNING_KEY,
        settings.KEY_PEPPER,
    ]


def check_answer(gateway: dict[str, Any], path: str, key: str, body: bytes) -> None:
    response = gateway["session"].post(
        gateway["server"].url + path,
        data=body,
        headers={"Authorization": f"Bearer {gateway['keys'][key]}", "Content-Type": "application/json"},
        timeout=30,
    )
    content = response.content  # a stream is read to its end
    where = f"{path} ({key}) <- {body[:300]!r}"
    assert response.status_code < 500, f"{response.status_code} {content[:500]!r} for {where}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), where
        error = orjson.loads(content)["error"]
        assert set(error) == {"message", "type", "param", "code"}, where
        assert isinstance(error["message"], str) and isinstance(error["type"], str), where
    answer = content.decode("utf-8", "replace") + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for secret in secrets_of(gateway):
        assert secret not in answer, f"a secret in the answer to {where}"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_fuzzed_bodies_get_no_5xx_openai_errors_and_no_secrets(fuzz_gateway: dict[str, Any], path: str) -> None:
    keys = ["plain", "budgeted", "cost"] if path == "/v1/chat/completions" else ["plain"]

    @FUZZ_SETTINGS
    @given(body=bodies, key=st.sampled_from(keys))
    def run(body: bytes, key: str) -> None:
        check_answer(fuzz_gateway, path, key, body)

    run()
    assert "Traceback" not in fuzz_gateway["server"].log()
