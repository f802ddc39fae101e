"""Token counting for estimates and routing.

OpenAI-family models are counted with tiktoken (the model's own encoding, chat framing
per OpenAI's cookbook: 3 tokens per message, 1 per name, 3 to prime the reply). Other
models get a documented approximation, ``approx-chars/4``: one token per four characters
of text, the same framing. tiktoken loads its encodings from ``TIKTOKEN_CACHE_DIR`` or
downloads them; when neither works the approximation is used and named as such.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

APPROXIMATION = "approx-chars/4"
_OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-", "gpt4", "davinci", "babbage")

_encodings: dict[str, Any] = {}
_failed: set[str] = set()
_lock = threading.Lock()


def _encoding_name(model: str) -> str | None:
    name = model.lower().rsplit("/", 1)[-1]
    if not name.startswith(_OPENAI_PREFIXES):
        return None
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return "o200k_base"
    return "cl100k_base"


def _encoding(name: str) -> Any | None:
    encoding = _encodings.get(name)
    if encoding is not None or name in _failed:
        return encoding
    with _lock:
        if name in _encodings or name in _failed:
            return _encodings.get(name)
        try:
            import tiktoken

            _encodings[name] = tiktoken.get_encoding(name)
        except Exception:  # noqa: BLE001 - offline without a cache dir, or a broken cache file
            logger.warning("tiktoken encoding %s unavailable; using %s", name, APPROXIMATION)
            _failed.add(name)
            return None
        return _encodings[name]


def _texts(body: dict[str, Any]) -> list[str]:
    """Every piece of text the provider will read: message contents, names, tools."""
    texts: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
        if isinstance(message.get("name"), str):
            texts.append(message["name"])
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                texts.append(str(call["function"].get("name", "")))
                texts.append(str(call["function"].get("arguments", "")))
    tools = body.get("tools")
    if tools:
        import orjson

        texts.append(orjson.dumps(tools).decode())
    return texts


def count_input_tokens(model: str, body: dict[str, Any]) -> tuple[int, str]:
    """Estimated prompt tokens of a chat request, and the tokenizer name used."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    framing = 3 * len(messages) + 3 + sum(1 for m in messages if m.get("name"))
    texts = _texts(body)
    encoding_name = _encoding_name(model)
    encoding = _encoding(encoding_name) if encoding_name else None
    if encoding is not None:
        count = sum(len(encoding.encode(text, disallowed_special=())) for text in texts)
        return count + framing, f"tiktoken/{encoding_name}"
    return sum((len(text) + 3) // 4 for text in texts) + framing, APPROXIMATION


def count_text_tokens(model: str, text: str) -> int:
    encoding_name = _encoding_name(model)
    encoding = _encoding(encoding_name) if encoding_name else None
    if encoding is not None:
        return len(encoding.encode(text, disallowed_special=()))
    return (len(text) + 3) // 4


def expected_output_tokens(body: dict[str, Any]) -> int:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return int(settings.GATEWAY["DEFAULT_EXPECTED_OUTPUT_TOKENS"])


def count_embedding_tokens(model: str, value: Any) -> tuple[int, str]:
    """Input tokens of an embeddings request's ``input`` (a string, strings, or token arrays).

    Token arrays count their length exactly; strings are counted as ``count_input_tokens``
    counts text (tiktoken for OpenAI-family models, else ``approx-chars/4``). No framing.
    """
    items = value if isinstance(value, list) else [value]
    if items and all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        return len(items), "token-array"
    encoding_name = _encoding_name(model)
    encoding = _encoding(encoding_name) if encoding_name else None
    total = 0
    for item in items:
        if isinstance(item, str):
            total += len(encoding.encode(item, disallowed_special=())) if encoding is not None else (len(item) + 3) // 4
        elif isinstance(item, list):
            total += len(item)
    return total, f"tiktoken/{encoding_name}" if encoding is not None else APPROXIMATION
