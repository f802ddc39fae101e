"""Adapters by provider kind. Adding a wire format: one module, one line here."""

from __future__ import annotations

from providers.adapters.anthropic import AnthropicAdapter
from providers.adapters.azure import AzureOpenAIAdapter
from providers.adapters.base import ProviderAdapter
from providers.adapters.gemini import GeminiAdapter
from providers.adapters.mock import MockAdapter
from providers.adapters.openai import OpenAIAdapter

ADAPTERS: dict[str, ProviderAdapter] = {
    OpenAIAdapter.kind: OpenAIAdapter(),
    MockAdapter.kind: MockAdapter(),
    AnthropicAdapter.kind: AnthropicAdapter(),
    GeminiAdapter.kind: GeminiAdapter(),
    AzureOpenAIAdapter.kind: AzureOpenAIAdapter(),
}


def adapter_for(kind: str) -> ProviderAdapter:
    return ADAPTERS[kind]
