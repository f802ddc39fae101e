"""A fake OpenAI-compatible provider: ``POST /v1/chat/completions`` and ``/v1/embeddings`` in OpenAI's wire format."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

from tests.fakes.http_server import Received, Reply, ScriptedServer, sse


def completion_json(
    text: str = "Hello from the fake provider.",
    *,
    model: str = "gpt-4o-mini",
    prompt_tokens: int = 12,
    completion_tokens: int = 7,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return {
        "id": "chatcmpl-fake123",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": usage,
    }


def stream_events(
    words: list[str] | None = None,
    *,
    model: str = "gpt-4o-mini",
    prompt_tokens: int = 12,
    completion_tokens: int | None = None,
    include_usage: bool = True,
) -> list[bytes]:
    words = words or ["Hello", " from", " the", " stream."]
    base = {"id": "chatcmpl-fakestream", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    frames = [
        sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    ]
    frames += [sse({**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}) for w in words]
    frames.append(sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if include_usage:
        out = completion_tokens if completion_tokens is not None else len(words)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": out, "total_tokens": prompt_tokens + out}
        frames.append(sse({**base, "choices": [], "usage": usage}))
    frames.append(b"data: [DONE]\n\n")
    return frames


def error_json(message: str, *, code: str = "error", type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def embedding_vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic small vector per input (values exact in float32, so base64 round-trips)."""
    seed = sum(ord(c) for c in text)
    return [((seed + i) % 16) / 16 for i in range(dimensions)]


def embeddings_json(body: dict[str, Any], *, prompt_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI's answer to ``POST /embeddings``: floats, or float32 base64 when asked."""
    value = body.get("input")
    items = [value] if isinstance(value, str) or (value and isinstance(value[0], int)) else list(value or [])
    dimensions = int(body.get("dimensions") or 8)
    data = []
    for index, item in enumerate(items):
        vector = embedding_vector(item if isinstance(item, str) else ",".join(map(str, item)), dimensions)
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = prompt_tokens if prompt_tokens is not None else sum(len(str(i).split()) for i in items)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", "text-embedding-3-small"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class FakeOpenAI(ScriptedServer):
    """Unscripted requests get a normal completion (or stream) answer, or embeddings."""

    def default_reply(self, received: Received) -> Reply:
        if received.path.endswith("/embeddings"):
            return Reply(json=embeddings_json(received.body if isinstance(received.body, dict) else {}))
        if not received.path.endswith("/chat/completions"):
            return Reply(status=404, json=error_json("unknown path", code="not_found"))
        body = received.body if isinstance(received.body, dict) else {}
        model = body.get("model", "gpt-4o-mini")
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return Reply(events=stream_events(model=model, include_usage=include))
        return Reply(json=completion_json(model=model))
