"""Azure OpenAI: OpenAI's wire format on a per-deployment URL with an ``api-key`` header.

``POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version=...``,
where the deployment is the ``Deployment.provider_model`` and the version comes from
``Provider.options["api_version"]`` (default ``DEFAULT_API_VERSION``); embeddings go to
``.../{deployment}/embeddings`` the same way. Bodies and
streams are OpenAI's, so everything else is the OpenAI adapter's.

Azure opens streams with chunks that carry only content-filter annotations
(``choices: []``, ``prompt_filter_results``) and no usage; they are dropped so clients
see OpenAI's stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from providers.adapters.base import Target
from providers.adapters.openai import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(OpenAIAdapter):
    kind = "azure"

    def url(self, target: Target, operation: str = "chat/completions") -> str:
        version = quote(str(target.options.get("api_version") or DEFAULT_API_VERSION), safe="")
        deployment = quote(target.model, safe="")
        return f"{target.base_url.rstrip('/')}/openai/deployments/{deployment}/{operation}?api-version={version}"

    def embeddings_url(self, target: Target) -> str:
        return self.url(target, "embeddings")

    def headers(self, target: Target) -> dict[str, str]:
        headers = {"api-key": target.api_key} if target.api_key else {}
        headers.update(target.extra_headers())
        return headers

    def stream(self, target: Target, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for chunk in super().stream(target, body):
            if chunk.get("choices") or chunk.get("usage"):
                yield chunk
