"""``POST /v1/messages``: Anthropic's Messages API through the gateway's routing and billing.

The request is validated in Anthropic's terms, then translated once into an OpenAI chat
request (``RouteRequest.body``) so that everything the chat path does works unchanged:
strategies, rules, cooldowns, budgets, token counts, the usage record (``endpoint =
messages``). Each attempt then sends what its deployment speaks:

- Anthropic deployments get the client's own body (only ``model`` replaced) and the
  client gets Anthropic's answer or events as they are: prompt caching, thinking blocks,
  citations and betas intact.
- OpenAI-format and Gemini deployments get the OpenAI translation through their usual
  adapter; the answer or stream is translated back (providers/adapters/anthropic_inbound.py).

A request using what only Anthropic can do (document blocks, server tools, MCP servers)
is routed to the model's Anthropic deployments only; without any, it is refused (400).
Errors reach the client in Anthropic's shape, streams included (``event: error``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from gatewaysite.api.errors import GatewayError, InvalidRequest
from gatewaysite.clock import monotonic, now
from providers.adapters import anthropic_inbound as inbound
from providers.adapters.anthropic import AnthropicAdapter, usage_of
from providers.adapters.base import UpstreamError, Usage
from providers.adapters.registry import adapter_for
from routing.config.snapshot import DeploymentInfo
from routing.services.completion import (
    Attempt,
    CallStreamBilling,
    CompletionResult,
    _as_gateway_error,
    _Call,
    _cost_headers,
)
from routing.services.dispatch import AttemptsExhausted, first_success
from routing.services.planning import check_model_access, plan_route
from routing.services.stream_billing import StreamLedger
from routing.strategies.base import RouteRequest
from usage.admission import admit

logger = logging.getLogger(__name__)

ANTHROPIC = AnthropicAdapter.kind
ROLES = ("user", "assistant")


@dataclass
class MessagesRequest:
    """The client's Anthropic body and what routing needs besides it."""

    native: dict[str, Any]
    refusal: UpstreamError | None  # why it cannot be translated for other providers, if it cannot
    beta: str | None  # the client's ``anthropic-beta`` header, for Anthropic deployments


# --- validation ----------------------------------------------------------------------------


def _blocks(value: Any, where: str) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be a string or an array of content blocks.", param=where)
    for index, block in enumerate(value):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"{where}[{index}] must be a content block with a 'type'.", param=f"{where}[{index}]")


def validate_messages_body(body: Any) -> dict[str, Any]:
    """Anthropic's Messages request, checked; errors are 400 (in Anthropic's shape at the view)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model: Field required (a string).", param="model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("max_tokens: Field required (a positive integer).", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required.", param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidRequest(f"{where}.role must be 'user' or 'assistant'.", param=f"{where}.role")
        _blocks(message.get("content"), f"{where}.content")
    system = body.get("system")
    if system is not None:
        _blocks(system, "system")
    for name in ("stream",):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise InvalidRequest(f"{name} must be a boolean.", param=name)
    for name, low, high in (("temperature", 0, 1), ("top_p", 0, 1)):
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high
        ):
            raise InvalidRequest(f"{name} must be a number between {low} and {high}.", param=name)
    stop = body.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise InvalidRequest("stop_sequences must be an array of strings.", param="stop_sequences")
    tools = body.get("tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)
    ):
        raise InvalidRequest("tools must be an array of tools, each with a name.", param="tools")
    for name in ("tool_choice", "metadata", "thinking"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise InvalidRequest(f"{name} must be an object.", param=name)
    return body


def messages_request(body: dict[str, Any], *, beta: str | None) -> tuple[MessagesRequest, dict[str, Any]]:
    """(the request, its OpenAI translation for routing); the translation leaves out what it cannot carry."""
    try:
        inbound.to_openai(body, strict=True)
        refusal = None
    except UpstreamError as error:
        refusal = error
    return MessagesRequest(native=body, refusal=refusal, beta=beta), inbound.to_openai(body, strict=False)


def count_tokens(route: RouteRequest) -> dict[str, int]:
    """``POST /v1/messages/count_tokens``: the gateway's own count of the request's input
    (its OpenAI translation, counted as chat requests are: tiktoken or ``approx-chars/4``)."""
    check_model_access(route)  # 404 / 403 as for a message
    return {"input_tokens": route.input_tokens()[0]}


# --- the call ------------------------------------------------------------------------------


def error_result(call: _Call, error: GatewayError) -> CompletionResult:
    """``fail_response`` (released, recorded) with Anthropic's error body."""
    result = call.fail_response(error)
    result.body = orjson.dumps(inbound.error_json(error.status_code, str(error.detail)))
    return result


def run_messages(
    route: RouteRequest, request: MessagesRequest, *, request_id: str, received: float
) -> CompletionResult:
    call = _Call(route=route, request_id=request_id, received=received, received_at=now())
    call.ranking = plan_route(route)
    if request.refusal is not None:
        native_only = [d for d in call.ranking.candidates if d.kind == ANTHROPIC]
        if not native_only:
            raise InvalidRequest(request.refusal.message, code=request.refusal.code, param=None)
        call.ranking.candidates = native_only
    call.admission = admit(route, call.ranking.candidates)  # rate limits and budget: one round trip
    call.reservation = call.admission.reservation

    def send(deployment: DeploymentInfo, attempt: Attempt, started: float) -> Any:
        adapter = adapter_for(deployment.kind)
        native = deployment.kind == ANTHROPIC
        if not route.stream:
            if native:
                return adapter.messages(deployment.target, request.native, beta=request.beta)  # type: ignore[attr-defined]  # native: an AnthropicAdapter
            return adapter.complete(deployment.target, route.body)
        if native:
            upstream = adapter.messages_stream(deployment.target, request.native, beta=request.beta)  # type: ignore[attr-defined]  # native: an AnthropicAdapter
        else:
            upstream = adapter.stream(deployment.target, route.body)
        first = next(upstream, None)
        attempt.ttft_ms = (monotonic() - started) * 1000
        if first is None:
            raise UpstreamError(f"{deployment.provider}: empty stream", status=502)
        return upstream, first

    try:
        attempt, result, started = first_success(call, send, streaming=route.stream)
    except AttemptsExhausted as exhausted:
        return error_result(call, _as_gateway_error(exhausted.error))
    native = attempt.deployment.kind == ANTHROPIC
    if route.stream:
        upstream, first = result
        return _stream_result(call, attempt, upstream, first, started, native=native)
    usage = result.usage or Usage()
    if native:
        body = result.body
        text = "".join(str(b.get("text") or "") for b in body.get("content") or () if isinstance(b, dict))
    else:
        body = inbound.message_of(result.body, model=route.model, usage=usage)
        text = "".join(str(b.get("text") or "") for b in body["content"] if b["type"] == "text")
    cost, spend = call.finish(status="ok", http_status=200, usage=usage, output_text=text)
    headers = call.headers(attempt.deployment)
    headers["content-type"] = "application/json"
    _cost_headers(headers, cost, spend)
    return CompletionResult(status=200, headers=headers, body=orjson.dumps(body))


def _native_event(name: str, data: bytes, parsed: dict[str, Any]) -> bytes:
    if b"\n" in data:  # a multi-line data field: written again on one line
        data = orjson.dumps(parsed)
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def _stream_result(
    call: _Call, attempt: Attempt, upstream: Iterator[Any], first: Any, started: float, *, native: bool
) -> CompletionResult:
    headers = call.headers(attempt.deployment)
    headers.update({"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"})

    ledger = StreamLedger(CallStreamBilling(call, attempt, started))

    def body() -> Iterator[bytes]:
        translator: inbound.EventTranslator | None = None
        try:
            if native:
                raw_usage: dict[str, Any] = {}
                item = first
                while item is not None:
                    name, data, parsed = item
                    kind = parsed.get("type")
                    if kind == "message_start":
                        message = parsed.get("message") or {}
                        raw_usage.update({k: v for k, v in (message.get("usage") or {}).items() if v is not None})
                    elif kind == "message_delta":
                        raw_usage.update({k: v for k, v in (parsed.get("usage") or {}).items() if v is not None})
                    elif kind == "content_block_delta":
                        delta = parsed.get("delta") or {}
                        if delta.get("type") == "text_delta":
                            ledger.texts.append(str(delta.get("text") or ""))
                    if kind == "message_stop":  # recorded before the client learns the answer is complete
                        ledger.usage_arrived(usage_of(raw_usage))
                        ledger.completed_logged()
                    yield _native_event(name, data, parsed)
                    item = next(upstream, None)
            else:
                translator = inbound.EventTranslator(model=call.route.model, input_tokens=call.route.input_tokens()[0])
                yield translator.start()
                chunk = first
                while chunk is not None:
                    if chunk.get("usage"):
                        ledger.usage = Usage.from_openai(chunk["usage"])
                    yield from translator.feed(chunk)
                    chunk = next(upstream, None)
                ledger.texts[:] = translator.texts
                ledger.completed_logged()
                yield from translator.finish(ledger.usage or call.estimated_usage(ledger.output_text))
        except UpstreamError as error:
            # Broken after it started: an Anthropic error event (the anthropic SDK raises on it),
            # no message_stop. Nothing is retried: the client already has part of the answer.
            if translator is not None:
                ledger.texts[:] = translator.texts
            ledger.upstream_failed(error)
            yield inbound.sse("error", inbound.error_json(error.status, error.message))
        except Exception:
            logger.exception("stream %s failed in the gateway", call.request_id)
            ledger.gateway_failed()
            yield inbound.sse("error", inbound.error_json(502, "The gateway failed while streaming."))
        finally:
            close = getattr(upstream, "close", None)
            if close is not None:
                close()
            ledger.client_closed()  # a no-op unless the client left

    return CompletionResult(status=200, headers=headers, stream=body())
