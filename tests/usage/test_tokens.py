"""Token counting never fails a request: odd shapes are skipped, tokenizer failures fall back."""

from __future__ import annotations

import random
import string
from typing import Any

import pytest
import tiktoken

from usage import tokens

PATHOLOGICAL = [" " * 1_000_000, "\t" * 1_000_000]


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=["spaces", "tabs"])
def test_tiktoken_itself_fails_on_the_pathological_input(text: str) -> None:
    with pytest.raises(ValueError):
        tiktoken.get_encoding("o200k_base").encode(text, disallowed_special=())


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=["spaces", "tabs"])
def test_a_tokenizer_failure_falls_back_to_the_named_approximation(text: str, monkeypatch: Any) -> None:
    # pieces as large as the text: tiktoken sees the whole million characters and fails for real
    monkeypatch.setattr(tokens, "_PIECE_CHARS", 10**7)
    body = {"messages": [{"role": "user", "content": text}]}
    count, tokenizer = tokens.count_input_tokens("gpt-4o", body)
    assert tokenizer == tokens.APPROXIMATION
    assert count == 250_000 + 3 + 3
    assert tokens.count_text_tokens("gpt-4o", text) == 250_000


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=["spaces", "tabs"])
def test_pathological_input_is_counted_exactly_in_pieces(text: str) -> None:
    count, tokenizer = tokens.count_input_tokens("gpt-4o", {"messages": [{"role": "user", "content": text}]})
    assert tokenizer == "tiktoken/o200k_base" and count > 0


def test_pieces_give_the_same_count_as_one_call() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + ".,;()'\"!? \n\t-"
    words = ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(60_000)]
    text = " ".join(words)
    assert len(tokens._pieces(text)) > 4
    encoding = tiktoken.get_encoding("o200k_base")
    assert tokens._encode_count(encoding, [text]) == len(encoding.encode(text, disallowed_special=()))
    assert "".join(tokens._pieces(text)) == text


@pytest.mark.parametrize(
    "body",
    [
        {"messages": 5},
        {"messages": [{"role": "assistant", "tool_calls": 5}]},
        {"messages": [{"role": "assistant", "tool_calls": True}]},
        {"messages": [{"role": "assistant", "tool_calls": "abc"}]},
        {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": 5, "arguments": {"a": 1}}}]}]},
        {"messages": [{"content": [5, {"text": 5}, None]}], "tools": {"a": 1}},
        {"messages": [None, 5, "x"]},
    ],
)
def test_odd_shapes_never_raise(body: dict[str, Any]) -> None:
    for model in ("gpt-4o", "gpt-4", "claude-3"):
        count, _ = tokens.count_input_tokens(model, body)
        assert count >= 3
