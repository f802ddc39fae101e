"""The one small base class every provider adapter implements.

An adapter translates an OpenAI chat completion request into its provider's wire format
and the answer back. It knows nothing about routing, keys or billing: it gets a
``Target`` (where and how to call) and the client's body, and returns OpenAI-shaped
results or raises ``UpstreamError`` saying whether another provider could succeed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    kind: str
    base_url: str
    model: str
    api_key: str = field(repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    connect_timeout: float = 5.0
    read_timeout: float = 120.0

    def extra_headers(self) -> dict[str, str]:
        """Headers the operator added in the provider's options: ``{"headers": {...}}``."""
        extra = self.options.get("headers")
        if not isinstance(extra, Mapping):
            return {}
        return {str(k): str(v) for k, v in extra.items()}


@dataclass(slots=True)
class Usage:
    """Token counts in OpenAI's sense: ``prompt_tokens`` includes cached and cache-write tokens.

    ``cache_creation_1h_tokens`` is the part of ``cache_creation_tokens`` written to a
    one-hour cache (Anthropic's ``ttl: "1h"``), billed at its own price; the rest are
    five-minute writes.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> Usage | None:
        if not isinstance(usage, Mapping):
            return None
        details = usage.get("prompt_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            cache_creation_tokens=int(details.get("cache_creation_tokens") or 0),
            cache_creation_1h_tokens=int(details.get("cache_creation_1h_tokens") or 0),
        )

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's usage object; ``cache_creation_tokens`` (and ``cache_creation_1h_tokens`` when
        there are any) are documented gateway extras."""
        result: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens or self.cache_creation_tokens:
            result["prompt_tokens_details"] = {
                "cached_tokens": self.cached_tokens,
                "cache_creation_tokens": self.cache_creation_tokens,
            }
            if self.cache_creation_1h_tokens:
                result["prompt_tokens_details"]["cache_creation_1h_tokens"] = self.cache_creation_1h_tokens
        return result


@dataclass(slots=True)
class Completion:
    body: dict[str, Any]
    usage: Usage | None


class UpstreamError(Exception):
    """A provider call failed.

    ``status`` is what the client will see; ``retryable`` says whether another
    deployment could succeed (rate limit, overload, timeout, 5xx) or not (the request
    itself is bad). ``client_error`` marks errors the client caused: never retried.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        code: str = "upstream_error",
        error_type: str = "api_error",
        retryable: bool = True,
        upstream_status: int | None = None,
        client_error: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.error_type = error_type
        self.retryable = retryable and not client_error
        self.upstream_status = upstream_status
        self.client_error = client_error


def error_for_status(provider: str, upstream_status: int, message: str) -> UpstreamError:
    """Map a provider's HTTP error status to what the client sees and whether to retry."""
    text = f"{provider}: {message}" if message else f"{provider} returned HTTP {upstream_status}"
    if upstream_status == 429:
        return UpstreamError(
            text, status=429, code="rate_limit_exceeded", error_type="rate_limit_error", upstream_status=429
        )
    if upstream_status in (400, 404, 409, 413, 422):
        return UpstreamError(
            text,
            status=400 if upstream_status != 413 else 413,
            code="invalid_request",
            error_type="invalid_request_error",
            upstream_status=upstream_status,
            client_error=True,
        )
    if upstream_status in (401, 403):
        return UpstreamError(
            f"{provider} rejected the gateway's credentials (HTTP {upstream_status})",
            status=502,
            code="upstream_auth_failed",
            retryable=False,
            upstream_status=upstream_status,
        )
    if upstream_status == 408:
        return UpstreamError(text, status=504, code="upstream_timeout", upstream_status=408)
    return UpstreamError(text, status=502, code="upstream_error", upstream_status=upstream_status)


class ProviderAdapter(ABC):
    kind: ClassVar[str]

    @abstractmethod
    def complete(self, target: Target, body: dict[str, Any]) -> Completion:
        """Non-streaming call; ``body`` is the client's OpenAI request (do not mutate it)."""

    @abstractmethod
    def stream(self, target: Target, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Streaming call yielding OpenAI ``chat.completion.chunk`` dicts.

        Errors before the first chunk raise ``UpstreamError`` from the first ``next()``,
        so the router can still fall back. The last chunk carries ``usage`` (OpenAI
        shape) whenever the provider reports it, whatever the client asked for; the
        router strips it when the client did not ask for usage.
        """
