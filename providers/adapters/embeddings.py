"""OpenAI's embeddings answer, for adapters whose provider answers in another shape.

The OpenAI and Azure adapters pass OpenAI's answer through; Gemini and the mock build
it here. ``encoding_format: base64`` is what OpenAI sends: the vector's float32 values,
little-endian, base64-encoded (the openai SDK asks for it by default and decodes it).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any

from providers.adapters.base import Usage


def encode(vector: Sequence[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return [float(v) for v in vector]


def decode(value: list[float] | str) -> list[float]:
    """The inverse of ``encode`` (floats unchanged)."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return value


def embeddings_list(
    vectors: Sequence[Sequence[float]], *, model: str, usage: Usage | None, encoding_format: str
) -> dict[str, Any]:
    tokens = usage.prompt_tokens if usage is not None else 0
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encode(vector, encoding_format)}
            for index, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def inputs(body: dict[str, Any]) -> list[Any]:
    """The request's inputs as a list: one string, strings, one token array, or token arrays."""
    value = body["input"]
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [value]
    return list(value)
