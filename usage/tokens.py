"""Token counting for estimates and routing.

OpenAI-family models are counted with tiktoken (the model's own encoding, chat framing
per OpenAI's cookbook: 3 tokens per message, 1 per name, 3 to prime the reply). Other
models get a documented approximation, ``approx-chars/4``: one token per four characters
of text, the same framing. tiktoken loads its encodings from ``TIKTOKEN_CACHE_DIR`` or
downloads them; when neither works the approximation is used and named as such.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import orjson
from django.conf import settings

from gatewaysite.offload import offload_cpu

logger = logging.getLogger(__name__)

APPROXIMATION = "approx-chars/4"
_OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-", "gpt4", "davinci", "babbage")

# Texts of at least this many characters are tokenized on a native thread (``offload_cpu``).
OFFLOAD_CHARS = 64 * 1024
# Largest piece handed to the tokenizer at once.
_PIECE_CHARS = 64 * 1024
_WORD_START = re.compile(r" (?=\S)")

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
    """Every piece of text the provider will read: message contents, names, tool calls, tools.

    Reads only values of the expected types (the body was validated, but this is also
    used on bodies that were not): never raises on a surprising shape.
    """
    texts: list[str] = []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
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
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for field in ("name", "arguments"):
                    value = function.get(field)
                    if isinstance(value, str):
                        texts.append(value)
                    elif value is not None:
                        texts.append(orjson.dumps(value).decode())
    tools = body.get("tools")
    if tools:
        texts.append(orjson.dumps(tools).decode())
    return texts


def _approximate(texts: list[str]) -> int:
    return sum((len(text) + 3) // 4 for text in texts)


def _pieces(text: str) -> list[str]:
    """``text`` cut into pieces of about ``_PIECE_CHARS`` characters, each cut just before a
    space followed by a word, where tiktoken's pre-tokenizer splits anyway, so the count
    does not change (a text with no such space within twice the piece size is cut where
    it is). Smaller pieces keep each call into the tokenizer short (see ``_tiktoken_count``)
    and stay clear of its regex backtracking limit."""
    if len(text) <= _PIECE_CHARS:
        return [text]
    pieces = []
    start = 0
    while len(text) - start > _PIECE_CHARS:
        boundary = _WORD_START.search(text, start + _PIECE_CHARS, start + 2 * _PIECE_CHARS)
        cut = boundary.start() if boundary else start + 2 * _PIECE_CHARS
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _count_piece(encoding: Any, piece: str) -> int:
    """Tokens of one piece. tiktoken's own ``encode_to_numpy`` path returns the tokens as one
    buffer instead of a list of Python ints: nothing is built while holding the interpreter
    lock (a 4 MB text is about 1.8 million tokens, whose list took ~90 ms under the lock)."""
    core = getattr(encoding, "_core_bpe", None)
    to_buffer = getattr(core, "encode_to_tiktoken_buffer", None)
    if to_buffer is not None:
        return memoryview(to_buffer(piece, set())).nbytes // 4  # 32-bit token ids
    return len(encoding.encode(piece, disallowed_special=()))


def _encode_count(encoding: Any, texts: list[str]) -> int:
    return sum(_count_piece(encoding, piece) for text in texts for piece in _pieces(text))


def _tiktoken_count(encoding_name: str, texts: list[str]) -> int | None:
    """Tokens of ``texts`` with tiktoken, or None when the tokenizer fails on them.

    tiktoken raises ``ValueError`` on some pathological inputs (its regex backtracking
    limit: a million spaces or tabs with ``o200k_base``); any failure falls back to the
    approximation, never to an error. Large inputs are counted on a native thread
    (``offload_cpu``): tiktoken releases the interpreter lock while it encodes, so the
    other requests of the process keep being served meanwhile.
    """
    encoding = _encoding(encoding_name)
    if encoding is None:
        return None
    size = sum(len(text) for text in texts)
    try:
        if size >= OFFLOAD_CHARS:
            return offload_cpu(_encode_count, encoding, texts)
        return _encode_count(encoding, texts)
    except Exception as exc:  # noqa: BLE001 - any tokenizer failure: the named approximation instead
        logger.warning("tiktoken/%s failed on %d characters (%s); using %s", encoding_name, size, exc, APPROXIMATION)
        return None


def count_input_tokens(model: str, body: dict[str, Any]) -> tuple[int, str]:
    """Estimated prompt tokens of a chat request, and the tokenizer name used."""
    raw = body.get("messages")
    messages = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
    framing = 3 * len(messages) + 3 + sum(1 for m in messages if m.get("name"))
    texts = _texts(body)
    encoding_name = _encoding_name(model)
    if encoding_name is not None:
        count = _tiktoken_count(encoding_name, texts)
        if count is not None:
            return count + framing, f"tiktoken/{encoding_name}"
    return _approximate(texts) + framing, APPROXIMATION


def count_text_tokens(model: str, text: str) -> int:
    encoding_name = _encoding_name(model)
    count = _tiktoken_count(encoding_name, [text]) if encoding_name else None
    return count if count is not None else _approximate([text])


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
