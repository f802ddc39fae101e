"""A fake Gemini API: ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse`` in Google's wire format.

Answers are ``GenerateContentResponse`` objects (camelCase, ``candidates``,
``usageMetadata``, ``modelVersion``, ``responseId``); a stream sends one per SSE
``data:`` line, separated by CRLF blank lines, with no terminator, as Google does.
Unscripted requests are checked (key header, roles, parts, function responses) and
answered with text. A wrong key gets Google's 400 ``API_KEY_INVALID``.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.http_server import CheckedServer, Received, Reply
from tests.fakes.openai_server import embedding_vector

MODEL = "gemini-2.5-flash"


def usage_json(prompt: int = 9, output: int = 6, cached: int = 0, thoughts: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def response_json(
    text: str | None = "Hello from Gemini.",
    *,
    function_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "STOP",
    candidates: int = 1,
    model: str = MODEL,
    **usage: int,
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if text is not None:
        parts.append({"text": text})
    for call in function_calls or ():
        part: dict[str, Any] = {"functionCall": {"name": call["name"], "args": call["args"]}}
        if call.get("thoughtSignature"):
            part["thoughtSignature"] = call["thoughtSignature"]
        parts.append(part)
    return {
        "candidates": [
            {
                "content": {"parts": [dict(p) for p in parts], "role": "model"},
                "finishReason": finish_reason,
                "avgLogprobs": -0.12,
                "index": i,
            }
            for i in range(candidates)
        ],
        "usageMetadata": usage_json(**usage),
        "modelVersion": model,
        "responseId": "mK9gaM2yL5-Z1dkP4oPn2Qs",
    }


def sse_frame(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\r\n\r\n"


def stream_events(
    words: list[str] | None = None,
    *,
    function_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "STOP",
    model: str = MODEL,
    prompt: int = 9,
    cached: int = 0,
    thoughts: int = 0,
) -> list[bytes]:
    """Text arrives in pieces; function calls arrive whole in the last chunk, as Gemini sends them."""
    words = ["Hello", " from", " Gemini."] if words is None else words
    frames = []
    chunks: list[list[dict[str, Any]]] = [[{"text": w}] for w in words]
    calls = [
        {
            "functionCall": {"name": c["name"], "args": c["args"]},
            **({"thoughtSignature": c["thoughtSignature"]} if c.get("thoughtSignature") else {}),
        }
        for c in function_calls or ()
    ]
    if calls:
        chunks.append(calls)
    for n, parts in enumerate(chunks, start=1):
        last = n == len(chunks)
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = finish_reason
        out = n if not last else len(words) + 5 * len(calls)
        frames.append(
            sse_frame(
                {
                    "candidates": [candidate],
                    "usageMetadata": usage_json(prompt, out, cached, thoughts if last else 0),
                    "modelVersion": model,
                    "responseId": "stream-resp-1",
                }
            )
        )
    return frames


def error_json(code: int, status: str, message: str, reason: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
    return {"error": error}


def check_request(received: Received, api_key: str | None) -> tuple[int, dict[str, Any]] | None:
    if api_key is not None and received.headers.get("x-goog-api-key") != api_key:
        return 400, error_json(
            400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "API_KEY_INVALID"
        )
    body = received.body
    if not isinstance(body, dict) or not isinstance(body.get("contents"), list) or not body["contents"]:
        return 400, error_json(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
    allowed = {
        "contents",
        "systemInstruction",
        "generationConfig",
        "tools",
        "toolConfig",
        "safetySettings",
        "cachedContent",
    }
    for key in body:
        if key not in allowed:
            return 400, error_json(400, "INVALID_ARGUMENT", f'Invalid JSON payload received. Unknown name "{key}"')
    pending_calls = 0
    for i, content in enumerate(body["contents"]):
        if content.get("role") not in ("user", "model"):
            return 400, error_json(400, "INVALID_ARGUMENT", f"Please use a valid role: user, model. ({i})")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return 400, error_json(400, "INVALID_ARGUMENT", f"contents[{i}].parts must not be empty")
        responses = sum(1 for p in parts if "functionResponse" in p)
        if responses and responses != pending_calls:
            return 400, error_json(
                400,
                "INVALID_ARGUMENT",
                "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.",
            )
        pending_calls = sum(1 for p in parts if "functionCall" in p)
    return None


class FakeGemini(CheckedServer):
    def __init__(self, api_key: str | None = "gm-test-key") -> None:
        super().__init__()
        self.api_key = api_key

    def default_reply(self, received: Received) -> Reply:
        path = received.path
        if path.startswith("/v1beta/models/") and path.endswith((":embedContent", ":batchEmbedContents")):
            return self.embed_reply(received)
        if not path.startswith("/v1beta/models/") or not (
            path.endswith(":generateContent") or path.endswith(":streamGenerateContent?alt=sse")
        ):
            return Reply(status=404, json=error_json(404, "NOT_FOUND", "Requested entity was not found."))
        rejection = self.rejection(received)
        if rejection is not None:
            return rejection
        if path.endswith("?alt=sse"):
            return Reply(events=stream_events())
        return Reply(json=response_json())

    def embed_reply(self, received: Received) -> Reply:
        """``embedContent`` / ``batchEmbedContents``: values per text; no token counts (as Gemini)."""
        if self.api_key is not None and received.headers.get("x-goog-api-key") != self.api_key:
            return Reply(status=400, json=error_json(400, "INVALID_ARGUMENT", "API key not valid.", "API_KEY_INVALID"))
        body = received.body if isinstance(received.body, dict) else {}
        batch = received.path.endswith(":batchEmbedContents")
        requests = body.get("requests") if batch else [body]
        model = "models/" + received.path.split("/models/", 1)[1].split(":", 1)[0]
        embeddings = []
        for request in requests or []:
            parts = (request.get("content") or {}).get("parts") or []
            if batch and request.get("model") != model:
                return Reply(status=400, json=error_json(400, "INVALID_ARGUMENT", "model mismatch in batch request"))
            if not parts or not all(isinstance(p.get("text"), str) for p in parts):
                return Reply(status=400, json=error_json(400, "INVALID_ARGUMENT", "content.parts must hold text"))
            text = "".join(p["text"] for p in parts)
            embeddings.append({"values": embedding_vector(text, int(request.get("outputDimensionality") or 8))})
        if not embeddings:
            return Reply(status=400, json=error_json(400, "INVALID_ARGUMENT", "requests is empty"))
        return Reply(json={"embeddings": embeddings} if batch else {"embedding": embeddings[0]})

    def rejection(self, received: Received) -> Reply | None:
        if received.path.endswith((":embedContent", ":batchEmbedContents")):
            return None
        problem = check_request(received, self.api_key)
        return Reply(status=problem[0], json=problem[1]) if problem else None
