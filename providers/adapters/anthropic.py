"""Anthropic's Messages API (``POST {base_url}/v1/messages``) behind OpenAI's chat format.

Requests: system and developer messages become ``system``; consecutive messages of one
role are merged (Anthropic requires alternating turns); assistant ``tool_calls`` become
``tool_use`` blocks and ``role: tool`` messages ``tool_result`` blocks in a user turn;
``image_url`` parts become image blocks. ``max_tokens`` is required by Anthropic, so
``GATEWAY["ANTHROPIC_DEFAULT_MAX_TOKENS"]`` applies when the client sends none.
Parameters Anthropic cannot honour are rejected (``REJECTED``) or dropped (``DROPPED``);
see docs/providers.md.

``messages`` / ``messages_stream`` serve the gateway's own ``POST /v1/messages``: the
client's Anthropic request goes through untouched but for ``model`` (prompt caching,
thinking blocks and betas intact), and Anthropic's answer or events come back as they are.

Options (``Provider.options``): ``anthropic_version`` (header, default 2023-06-01),
``anthropic_beta`` (header, optional), ``headers`` (extra headers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from django.conf import settings

from providers.adapters import translation
from providers.adapters.base import (
    Completion,
    ProviderAdapter,
    Target,
    UpstreamError,
    Usage,
    UsageReader,
    error_for_status,
)
from providers.adapters.translation import invalid, unsupported
from providers.http import iter_sse, post_json, read_json

DEFAULT_VERSION = "2023-06-01"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error types (in error bodies and ``event: error``) and their HTTP statuses.
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Sent through unchanged: Anthropic knows them under the same name.
PASSED = ("temperature", "top_p", "top_k")

# Parameters whose effect a client relies on and Anthropic cannot give: a clear 400.
REJECTED = {
    "logprobs": "Anthropic does not return log probabilities.",
    "top_logprobs": "Anthropic does not return log probabilities.",
    "audio": "Anthropic models do not produce audio.",
    **translation.REJECTED,
}

# Hints and bookkeeping Anthropic has no equivalent for: dropped silently.
DROPPED = ("seed", "frequency_penalty", "presence_penalty", *translation.DROPPED)


def upstream_error(target: Target, upstream_status: int, message: str) -> UpstreamError:
    """``error_for_status`` plus Anthropic's own 529 (overloaded): worth trying elsewhere."""
    if upstream_status == 529:
        return UpstreamError(
            f"{target.provider}: {message or 'overloaded'}",
            status=502,
            code="upstream_overloaded",
            upstream_status=529,
        )
    return error_for_status(target.provider, upstream_status, message)


# --- request ---------------------------------------------------------------------------

_NOT_ID = re.compile(r"[^a-zA-Z0-9_-]")


def tool_id(call_id: Any) -> str:
    """A tool call id as Anthropic accepts it (``^[a-zA-Z0-9_-]+$``).

    Conversations may carry ids minted by another provider (a fallback mid-conversation):
    Gemini's ids carry a thought signature after ``__thought__`` (see gemini.py), which is
    cut off; other characters are replaced, the same way for ``tool_use`` and ``tool_result``.
    """
    return _NOT_ID.sub("_", str(call_id or "").partition("__thought__")[0])


def _image_block(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    url = translation.image_url(part, where)
    inline = translation.data_url(url, where)
    if inline is not None:
        media_type, data = inline
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid(f"{where}: image URLs must be data: or http(s) URLs.")


def _blocks(content: Any, where: str, *, images: bool = True) -> list[dict[str, Any]]:
    """OpenAI message content (string or parts) as Anthropic content blocks."""
    blocks: list[dict[str, Any]] = []
    for text, part, part_where in translation.content_parts(content, where, images=images):
        block = {"type": "text", "text": text} if text is not None else _image_block(part, part_where)
        if isinstance(part.get("cache_control"), Mapping):
            block["cache_control"] = part["cache_control"]  # prompt caching breakpoints pass through
        blocks.append(block)
    return blocks


def _tool_use_blocks(tool_calls: Any, where: str) -> list[dict[str, Any]]:
    return [
        {"type": "tool_use", "id": tool_id(call.get("id")), "name": name, "input": arguments}
        for call, name, arguments in translation.tool_calls_of(tool_calls, where)
    ]


def _system_text(content: Any, where: str) -> list[dict[str, Any]]:
    return _blocks(content, where, images=False)


def translate_messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, Anthropic messages with strictly alternating roles)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_system_text(content, where))
            continue
        if role == "user":
            anthropic_role, blocks = "user", _blocks(content, where)
        elif role == "assistant":
            anthropic_role, blocks = "assistant", _blocks(content, where, images=False)
            if message.get("tool_calls"):
                blocks += _tool_use_blocks(message["tool_calls"], where)
        elif role == "tool":
            call_id = translation.tool_call_id(message, where)
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id(call_id)}
            inner = _blocks(content, where)
            if inner:
                result["content"] = inner
            anthropic_role, blocks = "user", [result]
        else:
            raise translation.unsupported_role(role, where)
        translation.add_turn(turns, anthropic_role, "content", blocks)
    return system, turns


def translate_tools(tools: Any) -> list[dict[str, Any]]:
    result = []
    for tool, function in translation.function_tools(tools):
        entry: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        if isinstance(tool.get("cache_control"), Mapping):
            entry["cache_control"] = tool["cache_control"]
        result.append(entry)
    return result


def translate_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        result: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        result = {"type": "none"}
    elif (name := translation.tool_choice_name(choice)) is not None:
        result = {"type": "tool", "name": name}
    else:
        raise translation.invalid_tool_choice()
    if result is not None and parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def request_body(target: Target, body: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
    translation.reject_parameters(body, REJECTED)
    if (body.get("n") or 1) != 1:
        raise unsupported("Anthropic returns one choice per request; send n=1", "n")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, Mapping) or response_format.get("type") != "text"
    ):
        raise unsupported(
            "Anthropic has no JSON mode; describe the format in the prompt or use a tool", "response_format"
        )
    translation.require_text_output(body, "Anthropic models produce text only")

    system, messages = translate_messages(body["messages"])
    if not messages:
        raise invalid("Anthropic needs at least one user or assistant message besides system messages.")
    payload: dict[str, Any] = {
        "model": target.model,
        "messages": messages,
        "max_tokens": translation.max_output_tokens(body) or settings.GATEWAY["ANTHROPIC_DEFAULT_MAX_TOKENS"],
    }
    if system:
        payload["system"] = system
    for name in PASSED:
        if body.get(name) is not None:
            payload[name] = body[name]
    stop = body.get("stop")
    if stop:
        payload["stop_sequences"] = translation.stop_sequences(stop)
    if body.get("tools"):
        payload["tools"] = translate_tools(body["tools"])
    choice = translate_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and payload.get("tools"):
        payload["tool_choice"] = choice
    if isinstance(body.get("user"), str) and body["user"]:
        payload["metadata"] = {"user_id": body["user"]}
    if stream:
        payload["stream"] = True
    return payload


# --- response --------------------------------------------------------------------------


def usage_of(raw: Mapping[str, Any] | None) -> Usage:
    """Anthropic's ``input_tokens`` excludes cache reads and writes; OpenAI's prompt count includes them.

    Cache writes come as a total (``cache_creation_input_tokens``) and, split by lifetime,
    in ``cache_creation.ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``: a
    one-hour write costs 2x the input price, a five-minute one 1.25x, so the split is kept.
    """
    reader = UsageReader(raw)
    fresh = reader.count("input_tokens")
    read = reader.count("cache_read_input_tokens")
    split = reader.raw.get("cache_creation")
    split = split if isinstance(split, Mapping) else {}
    five_minutes = reader.count("ephemeral_5m_input_tokens", split)
    one_hour = reader.count("ephemeral_1h_input_tokens", split)
    if reader.raw.get("cache_creation_input_tokens") is not None:
        written = reader.count("cache_creation_input_tokens")
    else:
        written = five_minutes + one_hour
    return reader.usage(
        prompt_tokens=fresh + read + written,
        completion_tokens=reader.count("output_tokens"),
        cached_tokens=read,
        cache_creation_tokens=written,
        cache_creation_1h_tokens=min(one_hour, written),
    )


def completion_of(target: Target, data: Any) -> Completion:
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise UpstreamError(f"{target.provider}: answered without content", status=502)
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in data["content"]:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(translation.tool_call(block.get("id"), block.get("name"), block.get("input")))
        # thinking and redacted_thinking blocks have no place in OpenAI's format
    usage = usage_of(data.get("usage"))
    result = translation.chat_completion(
        id=data.get("id") or "",
        model=data.get("model") or target.model,
        choices=[
            {
                "index": 0,
                "message": translation.assistant_message(texts, tool_calls),
                "finish_reason": FINISH_REASONS.get(data.get("stop_reason") or "end_turn", "stop"),
                "logprobs": None,
            }
        ],
        usage=usage.to_openai(),
    )
    return Completion(body=result, usage=usage)


class AnthropicAdapter(ProviderAdapter):
    kind = "anthropic"

    def url(self, target: Target) -> str:
        return target.base_url.rstrip("/") + "/v1/messages"

    def headers(self, target: Target) -> dict[str, str]:
        headers = {
            "x-api-key": target.api_key,
            "anthropic-version": str(target.options.get("anthropic_version", DEFAULT_VERSION)),
        }
        if target.options.get("anthropic_beta"):
            headers["anthropic-beta"] = str(target.options["anthropic_beta"])
        headers.update(target.extra_headers())
        return headers

    def _post(self, target: Target, payload: dict[str, Any], *, stream: bool, beta: str | None = None) -> Any:
        headers = self.headers(target)
        if beta:  # the client's betas (native /v1/messages), with the provider's own
            headers["anthropic-beta"] = ",".join(b for b in (headers.get("anthropic-beta"), beta) if b)
        try:
            return post_json(target, self.url(target), payload, headers, stream=stream)
        except UpstreamError as error:
            if error.upstream_status == 529:
                overloaded = upstream_error(target, 529, error.message.removeprefix(f"{target.provider}: "))
                overloaded.retry_after = error.retry_after
                raise overloaded from None
            raise

    def complete(self, target: Target, body: dict[str, Any]) -> Completion:
        response = self._post(target, request_body(target, body, stream=False), stream=False)
        return completion_of(target, read_json(target, response))

    def stream(self, target: Target, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        payload = request_body(target, body, stream=True)
        response = self._post(target, payload, stream=True)
        translator = StreamTranslator(target)
        for event in translation.stream_events(target, iter_sse(target, response)):
            if isinstance(event, dict):
                yield from translator.feed(event)
        if not translator.stopped:
            raise UpstreamError(
                f"{target.provider}: the stream ended before message_stop", status=502, code="upstream_truncated"
            )

    # --- native Messages API (``POST /v1/messages`` on the gateway) --------------------------

    def messages(self, target: Target, body: dict[str, Any], *, beta: str | None = None) -> Completion:
        """The client's Messages request passed through (only ``model`` replaced); Anthropic's answer as is."""
        payload = {**body, "model": target.model}
        payload.pop("stream", None)
        data = read_json(target, self._post(target, payload, stream=False, beta=beta))
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise UpstreamError(f"{target.provider}: answered without content", status=502)
        return Completion(body=data, usage=usage_of(data.get("usage")))

    def messages_stream(
        self, target: Target, body: dict[str, Any], *, beta: str | None = None
    ) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
        """The client's streaming Messages request passed through: (event name, raw data, parsed data).

        An ``error`` event raises ``UpstreamError`` (before the first event, the router can
        still fall back); a stream that ends before ``message_stop`` is ``upstream_truncated``.
        """
        payload = {**body, "model": target.model, "stream": True}
        response = self._post(target, payload, stream=True, beta=beta)
        stopped = False
        for event, data in iter_sse(target, response):
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamError(f"{target.provider}: sent an invalid stream event", status=502) from None
            if not isinstance(parsed, dict):
                continue
            kind = str(parsed.get("type") or event or "")
            if kind == "error":
                error = parsed.get("error") or {}
                status = ERROR_STATUSES.get(str(error.get("type")), 500)
                raise upstream_error(target, status, str(error.get("message") or ""))
            if kind == "message_stop":
                stopped = True
            yield event or kind, data, parsed
        if not stopped:
            raise UpstreamError(
                f"{target.provider}: the stream ended before message_stop", status=502, code="upstream_truncated"
            )


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` dicts out."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.base = translation.chunk_base(id="", model=target.model)
        self.usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self.finish_reason: str | None = None
        self.stopped = False

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return translation.chunk(self.base, 0, delta, finish_reason)

    def feed(self, event: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.base["id"] = message.get("id") or ""
            self.base["model"] = message.get("model") or self.target.model
            self.usage.update({k: v for k, v in (message.get("usage") or {}).items() if v is not None})
            yield self.chunk({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tool_index[int(event.get("index") or 0)] = len(self.tool_index)
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                yield self.chunk({"tool_calls": [call]})
            elif block.get("type") == "text" and block.get("text"):
                yield self.chunk({"content": block["text"]})
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                yield self.chunk({"content": delta.get("text") or ""})
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                call_index = self.tool_index.get(int(event.get("index") or 0))
                if call_index is not None:
                    yield self.chunk(
                        {"tool_calls": [{"index": call_index, "function": {"arguments": delta["partial_json"]}}]}
                    )
            # thinking, signature and citation deltas have no place in OpenAI's format
        elif kind == "message_delta":
            # usage here is cumulative; newer API versions repeat the input counts as well
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            if stop_reason:
                self.finish_reason = FINISH_REASONS.get(stop_reason, "stop")
                yield self.chunk({}, self.finish_reason)
        elif kind == "message_stop":
            self.stopped = True
            if self.finish_reason is None:
                yield self.chunk({}, "stop")
            yield translation.usage_chunk(self.base, usage_of(self.usage))
        elif kind == "error":
            error = event.get("error") or {}
            status = ERROR_STATUSES.get(str(error.get("type")), 500)
            raise upstream_error(self.target, status, str(error.get("message") or ""))
        # ping and future event types are ignored, as Anthropic asks of clients
