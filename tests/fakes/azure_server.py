"""A fake Azure OpenAI resource: ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``.

Bodies and streams are OpenAI's (see openai_server.py); Azure adds an ``api-key`` header,
a deployment in the path, a required ``api-version`` query, and opens streams with a
chunk carrying only ``prompt_filter_results``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http_server import Received, Reply, ScriptedServer, sse
from tests.fakes.openai_server import completion_json, embeddings_json, error_json, stream_events

PROMPT_FILTER_CHUNK = {
    "id": "",
    "object": "",
    "created": 0,
    "model": "",
    "choices": [],
    "prompt_filter_results": [
        {
            "prompt_index": 0,
            "content_filter_results": {
                "hate": {"filtered": False, "severity": "safe"},
                "self_harm": {"filtered": False, "severity": "safe"},
                "sexual": {"filtered": False, "severity": "safe"},
                "violence": {"filtered": False, "severity": "safe"},
            },
        }
    ],
}


def azure_stream_events(**kwargs: Any) -> list[bytes]:
    return [sse(PROMPT_FILTER_CHUNK), *stream_events(**kwargs)]


class FakeAzure(ScriptedServer):
    def __init__(self, api_key: str = "az-test-key") -> None:
        super().__init__()
        self.api_key = api_key

    def default_reply(self, received: Received) -> Reply:
        url = urlsplit(received.path)
        parts = url.path.split("/")
        embeddings = len(parts) == 5 and parts[1:3] == ["openai", "deployments"] and parts[4] == "embeddings"
        chat = len(parts) == 6 and parts[1:3] == ["openai", "deployments"] and parts[4:] == ["chat", "completions"]
        if not (chat or embeddings):
            return Reply(status=404, json=error_json("Resource not found", code="404"))
        if not parse_qs(url.query).get("api-version"):
            return Reply(status=404, json=error_json("Resource not found", code="404"))
        if received.headers.get("api-key") != self.api_key:
            return Reply(
                status=401,
                json=error_json(
                    "Access denied due to invalid subscription key or wrong API endpoint.", code="401", type_=""
                ),
            )
        body = received.body if isinstance(received.body, dict) else {}
        if embeddings:
            return Reply(json=embeddings_json({**body, "model": "text-embedding-3-small"}))
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return Reply(events=azure_stream_events(model="gpt-4o-2024-08-06", include_usage=include))
        return Reply(json=completion_json(model="gpt-4o-2024-08-06"))
