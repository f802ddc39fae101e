"""OpenAI's wire format, which also serves every OpenAI-compatible provider.

OpenAI, Mistral, Groq, Together, DeepSeek, OpenRouter, Ollama (``/v1``) and vLLM all
take ``POST {base_url}/chat/completions`` with a bearer key. Unknown request fields are
passed through untouched; only ``model`` is replaced by the deployment's model id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from providers.adapters.base import Completion, Embeddings, ProviderAdapter, Target, UpstreamError, Usage
from providers.http import iter_sse, post_json, read_json


class OpenAIAdapter(ProviderAdapter):
    kind = "openai"

    def url(self, target: Target) -> str:
        return target.base_url.rstrip("/") + "/chat/completions"

    def embeddings_url(self, target: Target) -> str:
        return target.base_url.rstrip("/") + "/embeddings"

    def headers(self, target: Target) -> dict[str, str]:
        headers = {}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        headers.update(target.extra_headers())
        return headers

    def request_body(self, target: Target, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        payload = dict(body)
        payload["model"] = target.model
        if stream:
            payload["stream"] = True
            options = dict(payload.get("stream_options") or {})
            options["include_usage"] = True  # billing needs usage whatever the client asked
            payload["stream_options"] = options
        else:
            payload.pop("stream", None)
            payload.pop("stream_options", None)
        return payload

    def complete(self, target: Target, body: dict[str, Any]) -> Completion:
        response = post_json(
            target, self.url(target), self.request_body(target, body, stream=False), self.headers(target)
        )
        data = read_json(target, response)
        if not isinstance(data, dict) or "choices" not in data:
            raise UpstreamError(f"{target.provider}: answered without choices", status=502)
        return Completion(body=data, usage=Usage.from_openai(data.get("usage")))

    def stream(self, target: Target, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        response = post_json(
            target, self.url(target), self.request_body(target, body, stream=True), self.headers(target), stream=True
        )
        done = finished = False
        for _event, data in iter_sse(target, response):
            if data == b"[DONE]":
                done = True
                continue  # read on to the end so the connection can be reused
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamError(f"{target.provider}: sent an invalid stream event", status=502) from None
            if isinstance(chunk, dict) and "error" in chunk:
                message = chunk["error"].get("message", "") if isinstance(chunk["error"], dict) else str(chunk["error"])
                raise UpstreamError(f"{target.provider}: {message}", status=502)
            if not finished and isinstance(chunk, dict):
                finished = any(isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ())
            yield chunk
        if not done and not finished:
            # The upstream closed the stream mid-answer (no finish_reason, no [DONE]).
            raise UpstreamError(
                f"{target.provider}: the stream ended before the answer was finished",
                status=502,
                code="upstream_truncated",
            )

    def embed(self, target: Target, body: dict[str, Any]) -> Embeddings:
        """``POST {base_url}/embeddings``: OpenAI's request and answer, passed through (model replaced)."""
        payload = {**body, "model": target.model}
        response = post_json(target, self.embeddings_url(target), payload, self.headers(target))
        data = read_json(target, response)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise UpstreamError(f"{target.provider}: answered without embeddings", status=502)
        return Embeddings(body=data, usage=Usage.from_openai(data.get("usage")))
