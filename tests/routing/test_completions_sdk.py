"""The official openai SDK against a live gateway, with a loopback OpenAI-compatible upstream."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fakes.http_server import Reply
from tests.fakes.openai_server import completion_json, error_json, stream_events

pytestmark = pytest.mark.django_db(transaction=True)


def test_non_streaming_completion(openai_route: dict[str, Any], openai_for: Any) -> None:
    client = openai_for(openai_route["secret"])
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake provider."
    assert completion.usage.prompt_tokens == 12
    assert raw.headers["x-gateway-provider"] == "up"
    assert raw.headers["x-gateway-deployment"] == "up-gpt-4o-mini"
    assert raw.headers["x-request-id"].startswith("req_")
    # 12 * 0.15 + 7 * 0.60 per million = 0.0000060
    assert raw.headers["x-gateway-cost-usd"] == "0.000006"
    sent = openai_route["fake"].received[-1]
    assert sent.headers["authorization"] == "Bearer sk-up"
    assert sent.body["model"] == "gpt-4o-mini"


def test_unknown_fields_pass_through(openai_route: dict[str, Any], openai_for: Any) -> None:
    client = openai_for(openai_route["secret"])
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], extra_body={"seed": 7, "vendor_knob": "x"}
    )
    assert openai_route["fake"].received[-1].body["vendor_knob"] == "x"
    assert openai_route["fake"].received[-1].body["seed"] == 7


def test_streaming_completion_with_usage(openai_route: dict[str, Any], openai_for: Any) -> None:
    client = openai_for(openai_route["secret"])
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the stream."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].model_extra["x_gateway"]["cost_usd"] == "0.0000042"
    # the gateway always asks the upstream for usage, for billing
    assert openai_route["fake"].received[-1].body["stream_options"] == {"include_usage": True}


def test_streaming_without_usage_hides_usage_chunk(openai_route: dict[str, Any], openai_for: Any) -> None:
    client = openai_for(openai_route["secret"])
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert openai_route["fake"].received[-1].body["stream_options"] == {"include_usage": True}


def test_model_listing(openai_route: dict[str, Any], openai_for: Any, issue_key: Any) -> None:
    client = openai_for(openai_route["secret"])
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    _, limited = issue_key("limited", allowed_models=["other"])
    assert [m.id for m in openai_for(limited).models.list()] == []


@pytest.mark.parametrize(
    ("upstream_status", "sdk_error", "status"),
    [
        (429, openai.RateLimitError, 429),
        (500, openai.InternalServerError, 502),
        (503, openai.InternalServerError, 502),
        (400, openai.BadRequestError, 400),
    ],
)
def test_upstream_errors_map_to_openai_errors(
    openai_route: dict[str, Any], openai_for: Any, upstream_status: int, sdk_error: type[Exception], status: int
) -> None:
    openai_route["fake"].queue(*[Reply(status=upstream_status, json=error_json("boom"))] * 3)
    client = openai_for(openai_route["secret"])
    with pytest.raises(sdk_error) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == status
    assert info.value.body["code"]


def test_upstream_timeout_is_504(openai_route: dict[str, Any], openai_for: Any) -> None:
    from providers.models import Provider

    Provider.objects.filter(name="up").update(read_timeout=0.3)
    from gatewaysite.config.changes import config_changed

    config_changed()
    openai_route["fake"].queue(Reply(json=completion_json(), delay=1.0))
    with pytest.raises(openai.APIStatusError) as info:
        openai_for(openai_route["secret"]).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
    assert info.value.status_code == 504


def test_client_errors(openai_route: dict[str, Any], openai_for: Any, issue_key: Any, gateway_url: str) -> None:
    import requests

    with pytest.raises(openai.AuthenticationError):
        openai_for("gwk_nothere0_x" * 2).models.list()
    with pytest.raises(openai.NotFoundError) as info:
        openai_for(openai_route["secret"]).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "Hi"}]
        )
    assert info.value.body["code"] == "model_not_found"
    _, limited = issue_key("limited", allowed_models=["other"])
    with pytest.raises(openai.PermissionDeniedError):
        openai_for(limited).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError):
        openai_for(openai_route["secret"]).chat.completions.create(model="gpt-4o-mini", messages=[])
    response = requests.post(
        gateway_url + "/v1/chat/completions",
        data=b"{not json",
        headers={"Authorization": f"Bearer {openai_route['secret']}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = requests.post(
        gateway_url + "/v1/chat/completions",
        data=b"x" * (5 * 1024 * 1024),
        headers={"Authorization": f"Bearer {openai_route['secret']}"},
    )
    assert response.status_code == 413


def test_stream_events_helper_is_openai_format() -> None:
    frames = stream_events(["a"])
    assert frames[-1] == b"data: [DONE]\n\n"


def test_operator_headers_reach_the_upstream(openai_route: dict[str, Any], openai_for: Any) -> None:
    """Provider options may add headers (e.g. OpenRouter's HTTP-Referer); clients cannot."""
    from providers.models import Provider

    provider = Provider.objects.get(name="up")
    provider.options = {"headers": {"HTTP-Referer": "https://gateway.example", "X-Title": "gateway"}}
    provider.save()
    openai_for(openai_route["secret"]).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], extra_headers={"X-Title": "client"}
    )
    sent = openai_route["fake"].received[-1].headers
    assert sent["http-referer"] == "https://gateway.example"
    assert sent["x-title"] == "gateway"
