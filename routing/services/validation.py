"""Checks on a chat completion body before it is routed. Errors are 400 with ``param``.

Every field the gateway itself reads (routing, token counting, budgets, the translating
adapters) is checked here against OpenAI's shapes, so nothing downstream meets a type it
does not expect: a wrong type is a 400 naming the field (``param``, e.g.
``messages[2].tool_calls[0].function.arguments``), never a 500. Fields the gateway only
passes through to an OpenAI-format upstream are left to that upstream, except for their
JSON type where a translating adapter reads them too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gatewaysite.api.errors import InvalidRequest

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# Larger than any model's context or output; keeps budget arithmetic in 64-bit integers.
MAX_TOKENS_LIMIT = 2**31 - 1
MAX_CHOICES = 128  # OpenAI's bound for ``n``


def _fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(f"'{name}' must be a number between {low:g} and {high:g}.", name)


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_int(value) or not low <= value <= high:
        raise _fail(f"'{name}' must be an integer between {low} and {high}.", name)


def _typed(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str, *, param: str = "") -> Any:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise _fail(f"'{param or name}' must be {what}.", param or name)
    return value


def _string(value: Any, param: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise _fail(f"'{param}' must be a string.", param)


def _content(content: Any, where: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _fail(f"'{where}' must be a string or an array of content parts.", where)
    for index, part in enumerate(content):
        here = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise _fail(f"'{here}' must be an object with a 'type'.", here)
        kind = part.get("type")
        if not isinstance(kind, str):
            raise _fail(f"'{here}.type' must be a string.", f"{here}.type")
        if kind in ("text", "refusal"):
            _string(part.get(kind), f"{here}.{kind}", required=True)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _fail(f"'{here}.image_url' must be an object with a string 'url'.", f"{here}.image_url")


def _tool_calls(calls: Any, where: str) -> None:
    if calls is None:
        return
    if not isinstance(calls, list):
        raise _fail(f"'{where}' must be an array of tool calls.", where)
    for index, call in enumerate(calls):
        here = f"{where}[{index}]"
        if not isinstance(call, dict):
            raise _fail(f"'{here}' must be an object.", here)
        _string(call.get("id"), f"{here}.id")
        _string(call.get("type"), f"{here}.type")
        function = call.get("function")
        if not isinstance(function, dict):
            raise _fail(f"'{here}.function' must be an object with 'name' and 'arguments'.", f"{here}.function")
        _string(function.get("name"), f"{here}.function.name", required=True)
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str | dict):
            raise _fail(f"'{here}.function.arguments' must be a JSON string.", f"{here}.function.arguments")


_ROLE_AND_CONTENT = frozenset({"role", "content"})


def _messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _fail("'messages' must be a non-empty array.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail(f"'messages[{index}]' must be an object.", f"messages[{index}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            where = f"messages[{index}]"
            raise _fail(f"'{where}.role' must be one of {', '.join(sorted(ROLES))}.", f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            _content(content, f"messages[{index}].content")
        if message.keys() <= _ROLE_AND_CONTENT:
            continue  # the usual message: nothing else to check (the paths are built only when needed)
        where = f"messages[{index}]"
        _string(message.get("name"), f"{where}.name")
        _string(message.get("tool_call_id"), f"{where}.tool_call_id")
        _tool_calls(message.get("tool_calls"), f"{where}.tool_calls")
        function_call = message.get("function_call")
        if function_call is not None and not isinstance(function_call, dict):
            raise _fail(f"'{where}.function_call' must be an object.", f"{where}.function_call")


def _tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _fail("'tools' must be an array of tools.", "tools")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _fail(f"'{where}' must be an object.", where)
        _string(tool.get("type"), f"{where}.type")
        function = tool.get("function")
        if function is None and tool.get("type", "function") != "function":
            continue  # another kind of tool: the upstream judges it
        if not isinstance(function, dict):
            raise _fail(f"'{where}.function' must be an object with a 'name'.", f"{where}.function")
        _string(function.get("name"), f"{where}.function.name", required=True)
        _string(function.get("description"), f"{where}.function.description")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _fail(f"'{where}.function.parameters' must be a JSON Schema object.", f"{where}.function.parameters")


def _stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise _fail("'stop' must be a string or an array of strings.", "stop")


def _tool_choice(body: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str | dict):
        raise _fail("'tool_choice' must be a string or an object.", "tool_choice")


def _stream_options(body: dict[str, Any]) -> None:
    options = _typed(body, "stream_options", dict, "an object")
    if options is not None:
        _typed(options, "include_usage", bool, "a boolean", param="stream_options.include_usage")


def _modalities(body: dict[str, Any]) -> None:
    modalities = _typed(body, "modalities", list, "an array of strings")
    if modalities is not None and not all(isinstance(item, str) for item in modalities):
        raise _fail("'modalities' must be an array of strings.", "modalities")


# Each optional field's check, in the order errors are reported; a check passes when its
# field is absent, so only the fields present are checked.
_FIELD_CHECKS: tuple[tuple[str, Callable[[dict[str, Any]], object]], ...] = (
    ("tools", lambda body: _tools(body["tools"])),
    ("tool_choice", _tool_choice),
    ("stream", lambda body: _typed(body, "stream", bool, "a boolean")),
    ("stream_options", _stream_options),
    ("metadata", lambda body: _typed(body, "metadata", dict, "an object")),
    ("response_format", lambda body: _typed(body, "response_format", dict, "an object")),
    ("logit_bias", lambda body: _typed(body, "logit_bias", dict, "an object")),
    ("user", lambda body: _typed(body, "user", str, "a string")),
    ("parallel_tool_calls", lambda body: _typed(body, "parallel_tool_calls", bool, "a boolean")),
    ("logprobs", lambda body: _typed(body, "logprobs", bool, "a boolean")),
    ("modalities", _modalities),
    ("stop", lambda body: _stop(body["stop"])),
    ("max_tokens", lambda body: _integer(body, "max_tokens", 1, MAX_TOKENS_LIMIT)),
    ("max_completion_tokens", lambda body: _integer(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)),
    ("n", lambda body: _integer(body, "n", 1, MAX_CHOICES)),
    ("top_logprobs", lambda body: _integer(body, "top_logprobs", 0, 20)),
    ("seed", lambda body: _typed(body, "seed", int, "an integer")),
    ("temperature", lambda body: _number(body, "temperature", 0, 2)),
    ("top_p", lambda body: _number(body, "top_p", 0, 1)),
    ("presence_penalty", lambda body: _number(body, "presence_penalty", -2, 2)),
    ("frequency_penalty", lambda body: _number(body, "frequency_penalty", -2, 2)),
)


def validate_chat_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _fail("'model' is required and must be a string.", "model")
    _messages(body.get("messages"))
    if len(body) > 2:  # more than the model and the messages
        for name, check in _FIELD_CHECKS:
            if name in body:
                check(body)
    return body
