"""Anthropic's Messages API as an entry point, for deployments that speak another wire format.

``POST /v1/messages`` reaches Anthropic deployments natively (anthropic.py passes the
body through). For OpenAI-format and Gemini deployments the request is translated here
into an OpenAI chat request (which their adapters already take), and their OpenAI-shaped
answer or stream back into Anthropic's message or event sequence (``message_start``,
``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta``, ``message_stop``).

What cannot be translated is refused with a 400 naming the parameter (``strict``), or,
when only counting tokens or choosing a route, left out (``strict=False``). Dropped
silently: ``thinking`` (the request option, and thinking blocks in earlier turns: other
providers neither take nor return them), ``top_k``, ``cache_control`` (other providers
cache on their own), ``output_config.effort``, ``service_tier`` and the other ``DROPPED``
fields, a tool result's ``is_error``. ``output_config.format`` (a JSON schema) becomes
``response_format``. The table is in docs/providers.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from providers.adapters.base import UpstreamError, Usage
from providers.adapters.translation import unsupported

# OpenAI finish_reason -> Anthropic stop_reason
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# HTTP status -> Anthropic error type (``{"type": "error", "error": {"type", "message"}}``).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# Request fields only Anthropic can honour: refused for other providers.
REFUSED = {
    "mcp_servers": "MCP servers run only on Anthropic deployments",
    "container": "code execution containers run only on Anthropic deployments",
}

# Request fields with no equivalent elsewhere that change nothing a client relies on.
DROPPED = (
    "thinking",
    "top_k",
    "service_tier",
    "context_management",
    "cache_control",
    "inference_geo",
    "speed",
    "diagnostics",
    "user_profile_id",
    "workspace_id",
)


def error_type_for(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error")


def error_json(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type_for(status), "message": message}}


# --- request: Anthropic -> OpenAI --------------------------------------------------------


class _Translation:
    def __init__(self, strict: bool) -> None:
        self.strict = strict

    def refuse(self, message: str, param: str) -> None:
        """Refuse (strict) or leave the piece out (lenient)."""
        if self.strict:
            raise unsupported(message, param)

    def image_part(self, block: Mapping[str, Any], where: str) -> dict[str, Any] | None:
        source = block.get("source")
        source = source if isinstance(source, Mapping) else {}
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            media_type = source.get("media_type") or "image/png"
            return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{source['data']}"}}
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return {"type": "image_url", "image_url": {"url": source["url"]}}
        self.refuse(f"{where}: images must be base64 or URL sources for this model", "messages")
        return None

    def tool_result_text(self, block: Mapping[str, Any], where: str) -> str:
        content = block.get("content")
        if content is None or isinstance(content, str):
            return content or ""
        texts = []
        for index, inner in enumerate(content if isinstance(content, list) else []):
            if isinstance(inner, Mapping) and inner.get("type") == "text":
                texts.append(str(inner.get("text") or ""))
            else:
                kind = inner.get("type") if isinstance(inner, Mapping) else None
                self.refuse(f"{where}.content[{index}]: tool results of type {kind!r} hold text only here", "messages")
        return "\n".join(texts)

    def user_messages(self, content: Any, where: str) -> list[dict[str, Any]]:
        """One Anthropic user turn as OpenAI messages: tool results first (as ``role: tool``)."""
        if isinstance(content, str):
            return [{"role": "user", "content": content}]
        tools: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []
        for index, block in enumerate(content):
            block_where = f"{where}.content[{index}]"
            kind = block.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": str(block.get("text") or "")})
            elif kind == "image":
                part = self.image_part(block, block_where)
                if part is not None:
                    parts.append(part)
            elif kind == "tool_result":
                tools.append(
                    {
                        "role": "tool",
                        "tool_call_id": str(block.get("tool_use_id") or ""),
                        "content": self.tool_result_text(block, block_where),
                    }
                )
            else:
                self.refuse(f"{block_where}: content blocks of type {kind!r} are only for Anthropic models", "messages")
        messages = tools
        if parts:
            only_text = all(p["type"] == "text" for p in parts)
            text_content = "".join(p["text"] for p in parts) if only_text and len(parts) == 1 else None
            messages = [*tools, {"role": "user", "content": text_content if text_content is not None else parts}]
        return messages

    def assistant_message(self, content: Any, where: str) -> dict[str, Any] | None:
        if isinstance(content, str):
            return {"role": "assistant", "content": content}
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for index, block in enumerate(content):
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text") or ""))
            elif kind == "tool_use":
                calls.append(
                    {
                        "id": str(block.get("id") or ""),
                        "type": "function",
                        "function": {
                            "name": str(block.get("name") or ""),
                            "arguments": orjson.dumps(block.get("input") or {}).decode(),
                        },
                    }
                )
            elif kind in ("thinking", "redacted_thinking"):
                continue  # other providers neither take nor return Anthropic's thinking blocks
            else:
                self.refuse(
                    f"{where}.content[{index}]: content blocks of type {kind!r} are only for Anthropic models",
                    "messages",
                )
        if not texts and not calls:
            return None
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        if calls:
            message["tool_calls"] = calls
        return message

    def tools(self, tools: list[Any]) -> list[dict[str, Any]]:
        result = []
        for index, tool in enumerate(tools):
            if tool.get("type") not in (None, "custom"):
                self.refuse(f"tools[{index}]: {tool.get('type')!r} tools run only on Anthropic models", "tools")
                continue
            function: dict[str, Any] = {
                "name": tool.get("name"),
                "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
            }
            if tool.get("description"):
                function["description"] = tool["description"]
            result.append({"type": "function", "function": function})
        return result


def _tool_choice(choice: Mapping[str, Any]) -> tuple[Any, bool | None]:
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind == "any":
        return "required", parallel
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}, parallel
    if kind == "none":
        return "none", None
    return "auto", parallel


def to_openai(body: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
    """A validated Anthropic Messages request as an OpenAI chat completion request."""
    t = _Translation(strict)
    for name, reason in REFUSED.items():
        if body.get(name):
            t.refuse(reason, name)
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        text = "\n".join(str(b.get("text") or "") for b in system if isinstance(b, Mapping))
        if text:
            messages.append({"role": "system", "content": text})
    for index, message in enumerate(body["messages"]):
        where = f"messages[{index}]"
        if message["role"] == "user":
            messages.extend(t.user_messages(message["content"], where))
        else:
            assistant = t.assistant_message(message["content"], where)
            if assistant is not None:
                messages.append(assistant)
    result: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": body["max_tokens"]}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            result[name] = body[name]
    if body.get("stop_sequences"):
        result["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        tools = t.tools(body["tools"])
        if tools:
            result["tools"] = tools
            if isinstance(body.get("tool_choice"), Mapping):
                choice, parallel = _tool_choice(body["tool_choice"])
                result["tool_choice"] = choice
                if parallel is not None:
                    result["parallel_tool_calls"] = parallel
    output = body.get("output_config")
    output_format = output.get("format") if isinstance(output, Mapping) else None
    if isinstance(output_format, Mapping):
        if output_format.get("type") == "json_schema" and isinstance(output_format.get("schema"), Mapping):
            result["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": output_format["schema"], "strict": True},
            }
        else:
            t.refuse(
                f"output_config.format of type {output_format.get('type')!r} is only for Anthropic models",
                "output_config",
            )
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str):
        result["user"] = metadata["user_id"]
    if body.get("stream"):
        result["stream"] = True
    return result


# --- answer: OpenAI -> Anthropic ----------------------------------------------------------


def usage_json(usage: Usage) -> dict[str, int]:
    """Anthropic's usage: ``input_tokens`` excludes cache reads and writes (OpenAI's prompt count includes them)."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_creation_tokens, usage.prompt_tokens - cached)
    return {
        "input_tokens": usage.prompt_tokens - cached - written,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


def message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        raise UpstreamError("The provider answered a tool call whose arguments are not JSON.", status=502) from None
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def message_of(body: Mapping[str, Any], *, model: str, usage: Usage) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic message (the first choice)."""
    choices = body.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], Mapping) else {}
    raw_message = choice.get("message")
    message: Mapping[str, Any] = raw_message if isinstance(raw_message, Mapping) else {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(str(p.get("text") or "") for p in text if isinstance(p, Mapping))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_json(usage),
    }


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class EventTranslator:
    """OpenAI ``chat.completion.chunk`` dicts in, Anthropic stream events (SSE bytes) out.

    ``start`` opens the message (``input_tokens`` is the gateway's estimate; the real counts
    come in ``message_delta``, which the anthropic SDK takes over), ``feed`` takes each chunk,
    ``finish`` closes the open block and the message with the provider's usage.
    """

    def __init__(self, *, model: str, input_tokens: int) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.index = -1  # the current content block
        self.open: str | None = None  # its kind while open
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> content block index
        self.stop_reason: str | None = None
        self.texts: list[str] = []

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _close(self) -> Iterator[bytes]:
        if self.open is not None:
            yield sse("content_block_stop", {"type": "content_block_stop", "index": self.index})
            self.open = None

    def _begin(self, kind: str, block: dict[str, Any]) -> Iterator[bytes]:
        yield from self._close()
        self.index += 1
        self.open = kind
        yield sse("content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block})

    def feed(self, chunk: Mapping[str, Any]) -> Iterator[bytes]:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open != "text":
                    yield from self._begin("text", {"type": "text", "text": ""})
                self.texts.append(text)
                yield sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self.index, "delta": {"type": "text_delta", "text": text}},
                )
            for call in delta.get("tool_calls") or ():
                position = int(call.get("index") or 0)
                function = call.get("function") or {}
                if position not in self.tool_blocks:
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                        "name": function.get("name") or "",
                        "input": {},
                    }
                    yield from self._begin("tool_use", block)
                    self.tool_blocks[position] = self.index
                arguments = function.get("arguments")
                if arguments:
                    if not isinstance(arguments, str):
                        arguments = orjson.dumps(arguments).decode()
                    yield sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self.tool_blocks[position],
                            "delta": {"type": "input_json_delta", "partial_json": arguments},
                        },
                    )
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")

    def finish(self, usage: Usage) -> Iterator[bytes]:
        yield from self._close()
        yield sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None},
                "usage": usage_json(usage),
            },
        )
        yield sse("message_stop", {"type": "message_stop"})
