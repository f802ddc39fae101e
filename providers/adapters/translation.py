"""Reading OpenAI chat requests for adapters that translate them to another wire format.

The checks every translating adapter (anthropic.py, gemini.py) makes the same way:
the client errors it raises, the walk over message content, image URLs, tool calls and
tool definitions, the parameters no translation can honour, and the OpenAI-shaped
pieces of the answer. What a provider makes of them stays in its adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from gatewaysite.clock import clock
from providers.adapters.base import Target, UpstreamError, Usage

# Rejected by every translating adapter, with the same reason; each adds its own.
REJECTED = {
    "functions": "use 'tools' instead of the deprecated 'functions'.",
    "function_call": "use 'tool_choice' instead of the deprecated 'function_call'.",
    "web_search_options": "web search is not available through this provider.",
}

# Dropped silently by every translating adapter; each adds its own.
DROPPED = (
    "logit_bias",
    "metadata",
    "store",
    "service_tier",
    "prediction",
    "prompt_cache_key",
    "safety_identifier",
    "reasoning_effort",
    "verbosity",
)


def unsupported(message: str, param: str) -> UpstreamError:
    return UpstreamError(
        f"{message} (parameter '{param}')",
        status=400,
        code="unsupported_parameter",
        error_type="invalid_request_error",
        client_error=True,
    )


def invalid(message: str) -> UpstreamError:
    return UpstreamError(
        message, status=400, code="invalid_request", error_type="invalid_request_error", client_error=True
    )


# --- request ---------------------------------------------------------------------------


def reject_parameters(body: Mapping[str, Any], rejected: Mapping[str, str]) -> None:
    """A 400 for the first parameter in ``rejected`` the client set (``false`` counts as unset)."""
    for name, reason in rejected.items():
        if body.get(name) not in (None, False):
            raise unsupported(reason, name)


def require_text_output(body: Mapping[str, Any], reason: str) -> None:
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported(reason, "modalities")


def max_output_tokens(body: Mapping[str, Any]) -> Any:
    """``max_completion_tokens``, or the deprecated ``max_tokens``; None when neither is set."""
    return body.get("max_completion_tokens") or body.get("max_tokens")


def stop_sequences(stop: Any) -> list[Any]:
    """OpenAI's ``stop`` (a string or a list) as a list."""
    return [stop] if isinstance(stop, str) else list(stop)


def content_parts(
    content: Any, where: str, *, images: bool = True
) -> Iterator[tuple[str | None, Mapping[str, Any], str]]:
    """The parts of OpenAI message content (a string or an array of parts) to send, checked.

    Yields ``(text, part, where)``: ``text`` is the text of a text or refusal part, None for
    an ``image_url`` part (allowed only with ``images``). Empty texts are skipped: providers
    reject empty text blocks. A string content is one text part.
    """
    if content is None:
        return
    if isinstance(content, str):
        if content:
            yield content, {"type": "text", "text": content}, where
        return
    if not isinstance(content, list):
        raise invalid(f"{where}: content must be a string or an array of parts.")
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise invalid(f"{where}[{index}]: a {kind} part needs a string '{kind}'.")
            if text:
                yield text, part, f"{where}[{index}]"
        elif kind == "image_url" and images:
            yield None, part, f"{where}[{index}]"
        else:
            raise unsupported(f"{where}[{index}]: content parts of type {kind!r} are not supported", "messages")


def image_url(part: Mapping[str, Any], where: str) -> str:
    """The URL of an ``image_url`` part (an object with ``url``, or the URL itself)."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str) or not url:
        raise invalid(f"{where}: image_url needs a url.")
    return url


def data_url(url: str, where: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a ``data:`` URL; None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64" or not media_type:
        raise invalid(f"{where}: image data URLs must be base64 ('data:image/png;base64,...').")
    return media_type, data


def tool_calls_of(tool_calls: Any, where: str) -> Iterator[tuple[Mapping[str, Any], str, dict[str, Any]]]:
    """(call, function name, arguments as a dict) for each of an assistant message's ``tool_calls``."""
    if not isinstance(tool_calls, list):
        raise invalid(f"{where}.tool_calls must be an array.")
    for index, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise invalid(f"{where}.tool_calls[{index}] needs function.name.")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise invalid(f"{where}.tool_calls[{index}].function.arguments is not valid JSON.") from None
        if not isinstance(parsed, dict):
            raise invalid(f"{where}.tool_calls[{index}].function.arguments must be a JSON object.")
        yield call, function["name"], parsed


def tool_call_id(message: Mapping[str, Any], where: str) -> str:
    """The ``tool_call_id`` of a ``role: tool`` message."""
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{where}: tool messages need a tool_call_id.")
    return call_id


def unsupported_role(role: Any, where: str) -> UpstreamError:
    return unsupported(f"{where}: the role {role!r} is not supported; use tools", "messages")


def add_turn(turns: list[dict[str, Any]], role: str, key: str, items: list[dict[str, Any]]) -> None:
    """Append a turn, merged into the last one when the role repeats: both providers need alternating roles."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(items)
    else:
        turns.append({"role": role, key: items})


def function_tools(tools: Any) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(tool, its ``function``) for each of the request's ``tools``; only function tools are supported."""
    if not isinstance(tools, list):
        raise invalid("'tools' must be an array.")
    for index, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            raise unsupported(f"tools[{index}]: only function tools are supported", "tools")
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise invalid(f"tools[{index}] needs function.name.")
        yield tool, function


def tool_choice_name(choice: Any) -> str | None:
    """The function name of a ``{"type": "function", "function": {"name": ...}}`` tool choice."""
    if isinstance(choice, Mapping) and isinstance((choice.get("function") or {}).get("name"), str):
        return choice["function"]["name"]
    return None


def invalid_tool_choice() -> UpstreamError:
    return invalid("'tool_choice' must be 'auto', 'none', 'required' or a function.")


# --- response --------------------------------------------------------------------------


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call, the arguments as the JSON string OpenAI sends."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments or {}).decode()},
    }


def assistant_message(texts: list[str], tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message of a choice: content is None only for a reply of tool calls alone."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def chat_completion(*, id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(clock.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def chunk_base(*, id: str, model: str) -> dict[str, Any]:
    """What every ``chat.completion.chunk`` of one stream repeats."""
    return {"id": id, "object": "chat.completion.chunk", "created": int(clock.time()), "model": model}


def chunk(base: dict[str, Any], index: int, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]}


def usage_chunk(base: dict[str, Any], usage: Usage) -> dict[str, Any]:
    """The last chunk of a stream, as OpenAI sends it with ``include_usage``: no choices, the usage."""
    return {**base, "choices": [], "usage": usage.to_openai()}


def stream_events(target: Target, sse: Iterator[tuple[Any, bytes]]) -> Iterator[Any]:
    """The decoded JSON of each server-sent event's data."""
    for _event, data in sse:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{target.provider}: sent an invalid stream event", status=502) from None
        yield event
