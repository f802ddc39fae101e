"""A fake Anthropic Messages API: ``POST /v1/messages`` in Anthropic's wire format.

Replies are shaped like the real API's (``anthropic.types.Message`` and the raw stream
events ``message_start`` ... ``message_stop``, each sent as ``event: <type>`` plus
``data: <json>``). Unscripted requests are checked the way Anthropic checks them
(headers, ``max_tokens``, alternating roles, tool results after tool uses) and answered
with a text message or its stream.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.http_server import CheckedServer, Received, Reply, sse

MODEL = "claude-sonnet-4-5-20250929"


def usage_json(
    input_tokens: int = 12, output_tokens: int = 7, cache_read: int = 0, cache_write: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message_json(
    text: str | None = "Hello from Claude.",
    *,
    tool_uses: list[dict[str, Any]] | None = None,
    stop_reason: str | None = None,
    model: str = MODEL,
    **usage: int,
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    for tool in tool_uses or ():
        content.append({"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": tool["input"]})
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if tool_uses else "end_turn"),
        "stop_sequence": None,
        "usage": usage_json(**usage),
    }


def _event(data: dict[str, Any]) -> bytes:
    return sse(data, event=data["type"])


def stream_events(
    words: list[str] | None = None,
    *,
    tool_uses: list[dict[str, Any]] | None = None,
    stop_reason: str | None = None,
    model: str = MODEL,
    input_tokens: int = 12,
    output_tokens: int | None = None,
    cache_read: int = 0,
    cache_write: int = 0,
) -> list[bytes]:
    """A whole stream; each tool use's input arrives as ``input_json_delta`` fragments."""
    words = ["Hello", " from", " Claude."] if words is None else words
    out = output_tokens if output_tokens is not None else len(words) + 10 * len(tool_uses or ())
    start_usage = usage_json(input_tokens, 1, cache_read, cache_write)
    message = {
        "id": "msg_01StreamStreamStream",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    frames = [_event({"type": "message_start", "message": message})]
    index = 0
    if words:
        frames.append(
            _event({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        )
        frames.append(_event({"type": "ping"}))
        for word in words:
            frames.append(
                _event({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word}})
            )
        frames.append(_event({"type": "content_block_stop", "index": index}))
        index += 1
    for tool in tool_uses or ():
        block = {"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}}
        frames.append(_event({"type": "content_block_start", "index": index, "content_block": block}))
        raw = tool["partial_json"] if "partial_json" in tool else [json.dumps(tool["input"])]
        frames.append(
            _event(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": ""},
                }
            )
        )
        for fragment in raw:
            frames.append(
                _event(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": fragment},
                    }
                )
            )
        frames.append(_event({"type": "content_block_stop", "index": index}))
        index += 1
    delta_usage = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": out,
    }
    frames.append(
        _event(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason or ("tool_use" if tool_uses else "end_turn"),
                    "stop_sequence": None,
                },
                "usage": delta_usage,
            }
        )
    )
    frames.append(_event({"type": "message_stop"}))
    return frames


def error_json(error_type: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


def error_event(error_type: str, message: str) -> bytes:
    return sse({"type": "error", "error": {"type": error_type, "message": message}}, event="error")


def check_request(received: Received, api_key: str | None) -> str | None:
    """What Anthropic would reject about this request, or None."""
    headers = received.headers
    # the API takes the key as x-api-key or, as recent SDKs send it, as a bearer token
    if api_key is not None and api_key not in (headers.get("x-api-key"), headers.get("authorization", "")[7:]):
        return "authentication_error: invalid x-api-key"
    if not headers.get("anthropic-version"):
        return "invalid_request_error: anthropic-version: header is required"
    body = received.body
    if not isinstance(body, dict):
        return "invalid_request_error: body must be a JSON object"
    if not isinstance(body.get("max_tokens"), int):
        return "invalid_request_error: max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "invalid_request_error: messages: at least one message is required"
    tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            return f"invalid_request_error: messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and messages[i - 1]["role"] == message["role"]:
            return "invalid_request_error: messages: roles must alternate between 'user' and 'assistant'"
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                return f"invalid_request_error: messages.{i}: text content blocks must be non-empty"
            if block.get("type") == "tool_use":
                if not re.fullmatch(r"[a-zA-Z0-9_-]+", block.get("id") or ""):
                    return f"invalid_request_error: messages.{i}: tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                tool_ids.add(block["id"])
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in tool_ids:
                return f"invalid_request_error: messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks"
    for key in body:
        if key not in {
            "model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p", "top_k",
            "tools", "tool_choice", "metadata", "stream", "thinking", "service_tier",
        }:  # fmt: skip
            return f"invalid_request_error: {key}: Extra inputs are not permitted"
    return None


class FakeAnthropic(CheckedServer):
    """Checks every request like Anthropic; unscripted valid requests get a text answer."""

    def __init__(self, api_key: str | None = "sk-ant-test") -> None:
        super().__init__()
        self.api_key = api_key

    def default_reply(self, received: Received) -> Reply:
        if received.path != "/v1/messages":
            return Reply(status=404, json=error_json("not_found_error", "Not found"))
        rejection = self.rejection(received)
        if rejection is not None:
            return rejection
        model = received.body["model"]
        if received.body.get("stream"):
            return Reply(events=stream_events(model=model))
        return Reply(json=message_json(model=model))

    def rejection(self, received: Received) -> Reply | None:
        problem = check_request(received, self.api_key) if received.path == "/v1/messages" else None
        if not problem:
            return None
        error_type, _, message = problem.partition(": ")
        return Reply(status=401 if error_type == "authentication_error" else 400, json=error_json(error_type, message))
