"""The built-in mock provider: deterministic replies with realistic usage, no network.

Options (``Provider.options``): ``latency_ms`` (time before the reply, default 0),
``chunk_delay_ms`` (between stream chunks, default 0), ``failure_rate`` (0..1, share of
calls failing with a retryable 503), ``reply`` (fixed text instead of the echo),
``embedding_dimensions`` (default 1536; a request's ``dimensions`` wins).

Embeddings are deterministic unit vectors seeded by the input's text, so equal inputs
get equal vectors; usage counts one token per four characters (token arrays: their length).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

from providers.adapters import embeddings
from providers.adapters.base import Completion, Embeddings, ProviderAdapter, Target, UpstreamError, Usage

DEFAULT_EMBEDDING_DIMENSIONS = 1536


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _approx_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


class MockAdapter(ProviderAdapter):
    kind = "mock"

    def _reply(self, target: Target, body: dict[str, Any]) -> tuple[str, Usage]:
        messages = body.get("messages") or []
        last = _text_of(messages[-1].get("content")) if messages and isinstance(messages[-1], dict) else ""
        reply = str(target.options.get("reply") or f"This is the mock provider. You said: {last[:200]}")
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and limit > 0:
            reply = reply[: limit * 4]
        prompt = sum(_approx_tokens(_text_of(m.get("content"))) + 4 for m in messages if isinstance(m, dict)) + 3
        return reply, Usage(prompt_tokens=prompt, completion_tokens=_approx_tokens(reply))

    def _maybe_fail(self, target: Target) -> None:
        latency = float(target.options.get("latency_ms") or 0)
        if latency:
            time.sleep(latency / 1000)
        rate = float(target.options.get("failure_rate") or 0)
        if rate and random.random() < rate:
            raise UpstreamError(f"{target.provider}: simulated failure", status=502, upstream_status=503)

    def complete(self, target: Target, body: dict[str, Any]) -> Completion:
        self._maybe_fail(target)
        reply, usage = self._reply(target, body)
        result = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": target.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage.to_openai(),
        }
        return Completion(body=result, usage=usage)

    def stream(self, target: Target, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self._maybe_fail(target)
        reply, usage = self._reply(target, body)
        delay = float(target.options.get("chunk_delay_ms") or 0) / 1000
        base = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": target.model,
        }
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        words = reply.split(" ")
        for i, word in enumerate(words):
            if delay:
                time.sleep(delay)
            text = word if i == 0 else " " + word
            yield {**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": usage.to_openai()}

    def embed(self, target: Target, body: dict[str, Any]) -> Embeddings:
        self._maybe_fail(target)
        dimensions = int(body.get("dimensions") or target.options.get("embedding_dimensions") or 0)
        dimensions = dimensions or DEFAULT_EMBEDDING_DIMENSIONS
        vectors = []
        tokens = 0
        for item in embeddings.inputs(body):
            text = item if isinstance(item, str) else " ".join(str(i) for i in item)
            tokens += _approx_tokens(item) if isinstance(item, str) else len(item)
            rng = random.Random(hashlib.sha256(text.encode()).digest())
            vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vectors.append([v / norm for v in vector])
        usage = Usage(prompt_tokens=tokens)
        result = embeddings.embeddings_list(
            vectors, model=target.model, usage=usage, encoding_format=body.get("encoding_format") or "float"
        )
        return Embeddings(body=result, usage=usage)
