"""The one small base class every provider adapter implements.

An adapter translates an OpenAI chat completion request into its provider's wire format
and the answer back. It knows nothing about routing, keys or billing: it gets a
``Target`` (where and how to call) and the client's body, and returns OpenAI-shaped
results or raises ``UpstreamError`` saying whether another provider could succeed.

Whatever an adapter raises leaves it through one path (``ProviderAdapter`` wraps every
subclass's ``complete`` and ``stream``): an ``UpstreamError``'s text is redacted of the
provider key (redaction.py), and any other exception, an adapter bug or an answer it
could not read, is logged with a redacted traceback and becomes a retryable
``UpstreamError``, so no provider text reaches a client or a log unredacted.
"""

from __future__ import annotations

import functools
import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from providers.adapters.redaction import redact

logger = logging.getLogger(__name__)


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
    """Token counts in OpenAI's sense: ``prompt_tokens`` includes cached and cache-write tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0

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
        )

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's usage object; ``cache_creation_tokens`` is a documented gateway extra."""
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


def redacted(target: Target, error: UpstreamError) -> UpstreamError:
    """``error`` with the provider key taken out of its message (in place; returned for ``raise``)."""
    message = redact(target.api_key, error.message)
    if message != error.message:
        error.message = message
        error.args = (message,)
    return error


def adapter_failure(target: Target, exc: Exception) -> UpstreamError:
    """An exception that is not an ``UpstreamError``: logged, redacted, and tried elsewhere."""
    text = "".join(traceback.format_exception(exc))
    logger.error("adapter %s failed on provider %s:\n%s", target.kind, target.provider, redact(target.api_key, text))
    return UpstreamError(f"{target.provider}: the gateway could not translate the answer", status=502)


_Complete = Callable[[Any, Target, dict[str, Any]], "Completion"]
_Stream = Callable[[Any, Target, dict[str, Any]], Iterator[dict[str, Any]]]


def _guard_complete(method: _Complete) -> _Complete:
    @functools.wraps(method)
    def complete(self: Any, target: Target, body: dict[str, Any]) -> Completion:
        try:
            return method(self, target, body)
        except UpstreamError as error:
            raise redacted(target, error) from None
        except Exception as exc:  # noqa: BLE001 - logged (redacted) by adapter_failure
            raise adapter_failure(target, exc) from None

    return complete


def _guard_stream(method: _Stream) -> _Stream:
    @functools.wraps(method)
    def stream(self: Any, target: Target, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            yield from method(self, target, body)
        except UpstreamError as error:
            raise redacted(target, error) from None
        except Exception as exc:  # noqa: BLE001 - logged (redacted) by adapter_failure
            raise adapter_failure(target, exc) from None

    return stream


class ProviderAdapter(ABC):
    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Route every adapter's errors through the one redaction path (see the module docstring).

        Done here rather than by each adapter so that none can forget it, a new adapter
        included. An adapter that extends another's method (Azure's ``stream``) is
        redacted twice, which changes nothing.
        """
        super().__init_subclass__(**kwargs)
        if "complete" in cls.__dict__:
            cls.complete = _guard_complete(cls.__dict__["complete"])  # type: ignore[method-assign]
        if "stream" in cls.__dict__:
            cls.stream = _guard_stream(cls.__dict__["stream"])  # type: ignore[method-assign]

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
