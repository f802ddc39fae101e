"""One JSON line per request with what an operator needs, the request id on every line
written while serving it, and never a key secret or a message body."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gatewaysite.middleware import new_request_id
from monitoring.logs import JsonFormatter, PlainFormatter, RequestIdFilter
from tests.fakes.http_server import Reply
from tests.fakes.openai_server import error_json

pytestmark = pytest.mark.django_db(transaction=True)
SECRET_TEXT = "the confidential question about project bluebird"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": SECRET_TEXT}]}


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _post(client: Any, secret: str, body: dict[str, Any]) -> Any:
    return client.post(
        "/v1/chat/completions",
        data=orjson.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )


def test_one_line_per_request_with_usage(client: Any, openai_route: dict[str, Any], captured: io.StringIO) -> None:
    response = _post(client, openai_route["secret"], BODY)
    assert response.status_code == 200
    [line] = [entry for entry in _lines(captured) if entry["logger"] == "gateway.request"]
    assert line["request_id"] == response["x-request-id"]
    assert line["level"] == "INFO" and line["ts"].endswith("Z")
    expected = {
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "key_prefix": openai_route["secret"].split("_")[1],
        "model": "gpt-4o-mini",
        "deployment": "up-gpt-4o-mini",
        "provider": "up",
        "attempts": 1,
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "outcome": "ok",
    }
    assert expected.items() <= line.items()
    assert line["cost_usd"] == response["x-gateway-cost-usd"] or float(line["cost_usd"]) == float(
        response["x-gateway-cost-usd"]
    )
    assert line["latency_ms"] > 0
    text = captured.getvalue()
    assert openai_route["secret"] not in text and SECRET_TEXT not in text


def test_stream_is_logged_when_it_ends(client: Any, openai_route: dict[str, Any], captured: io.StringIO) -> None:
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    response = _post(client, openai_route["secret"], body)
    assert not [e for e in _lines(captured) if e["logger"] == "gateway.request"]  # not sent yet
    content = b"".join(response.streaming_content)
    assert content.endswith(b"data: [DONE]\n\n")
    [line] = [e for e in _lines(captured) if e["logger"] == "gateway.request"]
    assert line["request_id"] == response["x-request-id"]
    assert line["stream"] is True and line["completion_tokens"] == 4 and line["outcome"] == "ok"
    assert SECRET_TEXT not in captured.getvalue() and "Hello" not in captured.getvalue()


def test_every_line_while_serving_carries_the_request_id(
    client: Any, openai_route: dict[str, Any], captured: io.StringIO
) -> None:
    openai_route["fake"].queue(*[Reply(status=500, json=error_json("boom"))] * 3)
    response = _post(client, openai_route["secret"], BODY)
    assert response.status_code == 502
    lines = _lines(captured)
    # the request line, and Django's own error line written after the middleware returned
    assert {e["logger"] for e in lines} >= {"gateway.request", "django.request"}
    assert all(e.get("request_id") == response["x-request-id"] for e in lines), lines
    second = _post(client, openai_route["secret"], BODY)
    ids = {e.get("request_id") for e in _lines(captured)}
    assert ids == {response["x-request-id"], second["x-request-id"]}
    # after the response, lines are no longer the request's
    logging.getLogger("after").warning("outside any request")
    assert "request_id" not in _lines(captured)[-1]


def test_plain_text_for_development() -> None:
    record = logging.LogRecord("gateway.request", logging.INFO, __file__, 1, "GET /v1/models 200", (), None)
    record.request_id = "req_abc"
    record.fields = {"status": 200, "model": None, "key_prefix": "k1"}
    line = PlainFormatter().format(record)
    assert "INFO gateway.request [req_abc] GET /v1/models 200 status=200 key_prefix=k1" in line
    assert "model=" not in line


def test_request_ids_are_req_and_a_random_version_4_uuid_in_hex() -> None:
    ids = [new_request_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)
    for request_id in ids:
        prefix, _, value = request_id.partition("_")
        assert prefix == "req"
        parsed = uuid.UUID(value)
        assert parsed.hex == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
