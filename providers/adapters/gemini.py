"""Google's Gemini API (``generateContent`` / ``streamGenerateContent``) behind OpenAI's chat format.

``POST {base_url}/v1beta/models/{model}:generateContent`` (and
``:streamGenerateContent?alt=sse``), the key in ``x-goog-api-key``. Requests: system and
developer messages become ``systemInstruction``; assistant turns are ``model`` turns;
tool calls are ``functionCall`` parts and tool results ``functionResponse`` parts;
consecutive turns of one role are merged. Sampling parameters go to ``generationConfig``.
Parameters Gemini cannot honour are rejected (``REJECTED``) or dropped (``DROPPED``);
see docs/providers.md.

Gemini 2.5+ attaches a ``thoughtSignature`` to function calls, which must come back with
the call on the next turn. OpenAI's format has no field for it, so it rides inside the
tool call id (``<id>__thought__<signature>``) and is unpacked when the client echoes the
assistant message back.

Embeddings: ``embedContent`` (one input) and ``batchEmbedContents`` (several), text only.

Options (``Provider.options``): ``api_version`` (path segment, default ``v1beta``),
``headers`` (extra headers), ``embedding_task_type`` (Gemini's ``taskType`` for embeddings,
e.g. ``RETRIEVAL_DOCUMENT``).
"""

from __future__ import annotations

import mimetypes
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from providers.adapters import embeddings, translation
from providers.adapters.base import (
    Completion,
    Embeddings,
    ProviderAdapter,
    Target,
    UpstreamError,
    Usage,
    UsageReader,
    error_for_status,
)
from providers.adapters.translation import invalid
from providers.http import iter_sse, post_json, read_json

SIGNATURE_SEPARATOR = "__thought__"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
    "UNEXPECTED_TOOL_CALL": "stop",
    "OTHER": "stop",
}

# Google's error ``status`` strings, for errors that arrive inside a stream.
ERROR_STATUSES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

# OpenAI name -> generationConfig name.
GENERATION_CONFIG = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}

REJECTED = {
    "logprobs": "log probabilities are not translated for Gemini.",
    "top_logprobs": "log probabilities are not translated for Gemini.",
    "audio": "audio output is not available through this provider.",
    **translation.REJECTED,
}

DROPPED = ("user", *translation.DROPPED, "parallel_tool_calls")

# JSON Schema keywords Gemini's OpenAPI-subset ``parameters`` schema refuses.
SCHEMA_KEYS_DROPPED = ("$schema", "additionalProperties", "strict", "$id", "$comment")


def upstream_error(target: Target, upstream_status: int, message: str) -> UpstreamError:
    """``error_for_status``, except that Gemini reports a bad API key as HTTP 400."""
    if upstream_status == 400 and "api key" in message.lower():
        upstream_status = 401
    return error_for_status(target.provider, upstream_status, message)


# --- request ---------------------------------------------------------------------------


def _image_part(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    url = translation.image_url(part, where)
    inline = translation.data_url(url, where)
    if inline is not None:
        mime_type, data = inline
        return {"inlineData": {"mimeType": mime_type, "data": data}}
    if url.startswith(("http://", "https://", "gs://")):
        mime_type = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime_type, "fileUri": url}}
    raise invalid(f"{where}: image URLs must be data:, http(s) or gs:// URLs.")


def _parts(content: Any, where: str, *, images: bool = True) -> list[dict[str, Any]]:
    return [
        {"text": text} if text is not None else _image_part(part, part_where)
        for text, part, part_where in translation.content_parts(content, where, images=images)
    ]


def _text(content: Any, where: str) -> str:
    return "".join(p["text"] for p in _parts(content, where, images=False))


def pack_call_id(call_id: str, signature: str | None) -> str:
    return f"{call_id}{SIGNATURE_SEPARATOR}{signature}" if signature else call_id


def unpack_call_id(call_id: str) -> tuple[str, str | None]:
    call_id, _, signature = call_id.partition(SIGNATURE_SEPARATOR)
    return call_id, signature or None


def _function_call_parts(tool_calls: Any, where: str, names: dict[str, str]) -> list[dict[str, Any]]:
    parts = []
    for call, name, args in translation.tool_calls_of(tool_calls, where):
        raw_id = str(call.get("id") or "")
        names[raw_id] = name
        _, signature = unpack_call_id(raw_id)
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(message: Mapping[str, Any], where: str, names: dict[str, str]) -> dict[str, Any]:
    call_id = translation.tool_call_id(message, where)
    name = names.get(call_id) or message.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"{where}: tool_call_id {call_id!r} matches no earlier assistant tool call.")
    text = _text(message.get("content"), where)
    try:
        result = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        result = None
    response = result if isinstance(result, dict) else {"content": text if result is None else result}
    return {"functionResponse": {"name": name, "response": response}}


def translate_messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents with merged consecutive roles)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for functionResponse
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_parts(content, where, images=False))
            continue
        if role == "user":
            gemini_role, parts = "user", _parts(content, where)
        elif role == "assistant":
            gemini_role, parts = "model", _parts(content, where, images=False)
            if message.get("tool_calls"):
                parts += _function_call_parts(message["tool_calls"], where, names)
        elif role == "tool":
            gemini_role, parts = "user", [_function_response(message, where, names)]
        else:
            raise translation.unsupported_role(role, where)
        translation.add_turn(contents, gemini_role, "parts", parts)
    return system, contents


def clean_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: clean_schema(v) for k, v in schema.items() if k not in SCHEMA_KEYS_DROPPED}
    if isinstance(schema, list):
        return [clean_schema(v) for v in schema]
    return schema


def translate_tools(tools: Any) -> list[dict[str, Any]]:
    declarations = []
    for _tool, function in translation.function_tools(tools):
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        parameters = function.get("parameters")
        if isinstance(parameters, Mapping) and parameters.get("properties"):
            declaration["parameters"] = clean_schema(dict(parameters))  # Gemini refuses an empty object schema
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def translate_tool_choice(choice: Any) -> dict[str, Any]:
    if choice == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    name = translation.tool_choice_name(choice)
    if name is not None:
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise translation.invalid_tool_choice()


def _response_format(config: dict[str, Any], response_format: Any) -> None:
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        config["responseMimeType"] = "application/json"
        if isinstance(schema, Mapping):
            config["responseJsonSchema"] = schema
        return
    raise invalid("'response_format' must be of type text, json_object or json_schema.")


def request_body(body: Mapping[str, Any]) -> dict[str, Any]:
    translation.reject_parameters(body, REJECTED)
    translation.require_text_output(body, "only text output is available through this provider")

    system, contents = translate_messages(body["messages"])
    if not contents:
        raise invalid("Gemini needs at least one user or assistant message besides system messages.")
    payload: dict[str, Any] = {"contents": contents}
    if system:
        payload["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    for name, gemini_name in GENERATION_CONFIG.items():
        if body.get(name) is not None:
            config[gemini_name] = body[name]
    max_tokens = translation.max_output_tokens(body)
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = translation.stop_sequences(stop)
    if (body.get("n") or 1) != 1:
        config["candidateCount"] = body["n"]
    if body.get("response_format") is not None:
        _response_format(config, body["response_format"])
    if config:
        payload["generationConfig"] = config
    if body.get("tools"):
        payload["tools"] = translate_tools(body["tools"])
        if body.get("tool_choice") is not None:
            payload["toolConfig"] = translate_tool_choice(body["tool_choice"])
    return payload


# --- response --------------------------------------------------------------------------


def usage_of(raw: Mapping[str, Any] | None) -> Usage:
    """``promptTokenCount`` already includes cached tokens; thinking counts as output."""
    reader = UsageReader(raw)
    return reader.usage(
        prompt_tokens=reader.count("promptTokenCount") + reader.count("toolUsePromptTokenCount"),
        completion_tokens=reader.count("candidatesTokenCount") + reader.count("thoughtsTokenCount"),
        cached_tokens=reader.count("cachedContentTokenCount"),
    )


def _tool_call(part: Mapping[str, Any]) -> dict[str, Any]:
    call = part["functionCall"]
    call_id = str(call.get("id") or "call_" + uuid.uuid4().hex[:24])
    return translation.tool_call(
        pack_call_id(call_id, part.get("thoughtSignature")), call.get("name"), call.get("args")
    )


def _split_parts(candidate: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if not isinstance(part, Mapping) or part.get("thought"):
            continue  # thought summaries have no place in OpenAI's format
        if isinstance(part.get("functionCall"), Mapping):
            calls.append(_tool_call(part))
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    return texts, calls


def _finish_reason(reason: str | None, has_calls: bool) -> str | None:
    if not reason:
        return None
    mapped = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def completion_of(target: Target, data: Any) -> Completion:
    if not isinstance(data, dict):
        raise UpstreamError(f"{target.provider}: answered without candidates", status=502)
    choices = []
    candidates = data.get("candidates") or []
    for position, candidate in enumerate(candidates):
        texts, calls = _split_parts(candidate)
        choices.append(
            {
                "index": int(candidate.get("index") or position),
                "message": translation.assistant_message(texts, calls),
                "finish_reason": _finish_reason(candidate.get("finishReason") or "STOP", bool(calls)),
                "logprobs": None,
            }
        )
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "content_filter",
                "logprobs": None,
            }
        )
    usage = usage_of(data.get("usageMetadata"))
    result = translation.chat_completion(
        id="chatcmpl-" + str(data.get("responseId") or uuid.uuid4().hex[:24]),
        model=data.get("modelVersion") or target.model,
        choices=choices,
        usage=usage.to_openai(),
    )
    return Completion(body=result, usage=usage)


class GeminiAdapter(ProviderAdapter):
    kind = "gemini"

    def url(self, target: Target, *, stream: bool, method: str | None = None) -> str:
        version = str(target.options.get("api_version") or "v1beta")
        model = quote(target.model.removeprefix("models/"), safe="")
        method = method or ("streamGenerateContent?alt=sse" if stream else "generateContent")
        return f"{target.base_url.rstrip('/')}/{version}/models/{model}:{method}"

    def headers(self, target: Target) -> dict[str, str]:
        headers = {"x-goog-api-key": target.api_key}
        headers.update(target.extra_headers())
        return headers

    def _post(self, target: Target, payload: dict[str, Any], *, stream: bool, method: str | None = None) -> Any:
        try:
            url = self.url(target, stream=stream, method=method)
            return post_json(target, url, payload, self.headers(target), stream=stream)
        except UpstreamError as error:
            if error.upstream_status == 400 and "api key" in error.message.lower():
                raise upstream_error(target, 400, error.message.removeprefix(f"{target.provider}: ")) from None
            raise

    def complete(self, target: Target, body: dict[str, Any]) -> Completion:
        response = self._post(target, request_body(body), stream=False)
        return completion_of(target, read_json(target, response))

    def stream(self, target: Target, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        payload = request_body(body)
        response = self._post(target, payload, stream=True)
        translator = StreamTranslator(target)
        for event in translation.stream_events(target, iter_sse(target, response)):
            if isinstance(event, list) and event:
                event = event[0]
            if isinstance(event, dict):
                yield from translator.feed(event)
        yield from translator.close()

    def embed(self, target: Target, body: dict[str, Any]) -> Embeddings:
        """``embedContent`` for one input, ``batchEmbedContents`` for several (text only).

        Gemini reports no token count for embeddings: ``usage`` is None and the gateway
        bills its own count of the input. ``dimensions`` is ``outputDimensionality``.
        """
        items = embeddings.inputs(body)
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise translation.unsupported(f"input[{index}]: Gemini embeds text only, not token arrays", "input")
        model = "models/" + target.model.removeprefix("models/")
        requests = []
        for item in items:
            request: dict[str, Any] = {"model": model, "content": {"parts": [{"text": item}]}}
            if body.get("dimensions") is not None:
                request["outputDimensionality"] = body["dimensions"]
            if target.options.get("embedding_task_type"):
                request["taskType"] = str(target.options["embedding_task_type"])
            requests.append(request)
        found: object
        if len(requests) == 1:
            data = read_json(target, self._post(target, requests[0], stream=False, method="embedContent"))
            found = [data.get("embedding")] if isinstance(data, dict) else []
        else:
            data = read_json(
                target, self._post(target, {"requests": requests}, stream=False, method="batchEmbedContents")
            )
            found = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(found, list) or len(found) != len(items):
            raise UpstreamError(f"{target.provider}: answered without one embedding per input", status=502)
        vectors = []
        for entry in found:
            values = entry.get("values") if isinstance(entry, dict) else None
            if not isinstance(values, list):
                raise UpstreamError(f"{target.provider}: answered an embedding without values", status=502)
            vectors.append(values)
        result = embeddings.embeddings_list(
            vectors, model=target.model, usage=None, encoding_format=body.get("encoding_format") or "float"
        )
        return Embeddings(body=result, usage=None)


class StreamTranslator:
    """Streamed ``GenerateContentResponse`` objects in, OpenAI ``chat.completion.chunk`` dicts out."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.base = translation.chunk_base(id="chatcmpl-" + uuid.uuid4().hex[:24], model=target.model)
        self.usage: Mapping[str, Any] | None = None
        self.tool_counts: dict[int, int] = {}  # candidate index -> tool calls sent so far
        self.finished: set[int] = set()
        self.started = False

    def chunk(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return translation.chunk(self.base, index, delta, finish_reason)

    def feed(self, event: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if isinstance(event.get("error"), Mapping):
            error = event["error"]
            code = error.get("code")
            status = code if isinstance(code, int) and code >= 400 else ERROR_STATUSES.get(error.get("status"), 500)
            raise upstream_error(self.target, status, str(error.get("message") or ""))
        if not self.started:
            self.started = True
            if event.get("responseId"):
                self.base["id"] = "chatcmpl-" + str(event["responseId"])
            self.base["model"] = event.get("modelVersion") or self.target.model
            yield self.chunk(0, {"role": "assistant", "content": ""})
        if event.get("usageMetadata"):
            self.usage = event["usageMetadata"]  # cumulative: the last one counts
        for position, candidate in enumerate(event.get("candidates") or ()):
            index = int(candidate.get("index") or position)
            texts, calls = _split_parts(candidate)
            delta: dict[str, Any] = {}
            if texts:
                delta["content"] = "".join(texts)
            if calls:
                first = self.tool_counts.get(index, 0)
                delta["tool_calls"] = [{"index": first + i, **call} for i, call in enumerate(calls)]
                self.tool_counts[index] = first + len(calls)
            if delta:
                yield self.chunk(index, delta)
            reason = _finish_reason(candidate.get("finishReason"), bool(self.tool_counts.get(index)))
            if reason:
                self.finished.add(index)
                yield self.chunk(index, {}, reason)
        if not event.get("candidates") and (event.get("promptFeedback") or {}).get("blockReason"):
            self.finished.add(0)
            yield self.chunk(0, {}, "content_filter")

    def close(self) -> Iterator[dict[str, Any]]:
        if not self.finished:
            raise UpstreamError(
                f"{self.target.provider}: the stream ended before a finish reason",
                status=502,
                code="upstream_truncated",
            )
        if self.usage is not None:
            yield translation.usage_chunk(self.base, usage_of(self.usage))
