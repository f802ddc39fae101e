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
import re
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gatewaysite.clock import now
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
    read_timeout: float = 120.0  # between two reads from the socket
    response_timeout: float = 600.0  # a whole non-streaming response
    first_chunk_timeout: float = 120.0  # a stream: from the request to its first event
    stream_idle_timeout: float = 60.0  # a stream: between two events

    def extra_headers(self) -> dict[str, str]:
        """Headers the operator added in the provider's options: ``{"headers": {...}}``."""
        extra = self.options.get("headers")
        if not isinstance(extra, Mapping):
            return {}
        return {str(k): str(v) for k, v in extra.items()}


# The most tokens one field of one request's usage may plausibly report. The largest
# context windows hold a few million tokens; a count above this (or negative, or not an
# integer) is an upstream anomaly, never billed as reported (docs/cost.md).
MAX_PLAUSIBLE_TOKENS = 100_000_000

# Carries ``Usage.anomaly`` through an OpenAI-shaped usage object (the translated usage chunk
# of a stream is parsed again by the request path); a documented gateway extra.
ANOMALY_FIELD = "x_gateway_usage_anomaly"


class UsageReader:
    """Reads token counts out of a provider's usage object, noting implausible values.

    Every adapter's usage parsing goes through ``count``: a value that is not a
    non-negative integer up to ``MAX_PLAUSIBLE_TOKENS`` counts as 0 and is described in
    ``problems`` (with the raw value), which ``usage`` puts in ``Usage.anomaly``. The
    request path then bills the gateway's own token estimate instead (docs/cost.md).
    """

    __slots__ = ("raw", "problems")

    def __init__(self, raw: Mapping[str, Any] | None) -> None:
        self.raw: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        self.problems: list[str] = []

    def count(self, name: str, raw: Mapping[str, Any] | None = None) -> int:
        source = self.raw if raw is None else raw
        value = source.get(name)
        if value is None:
            return 0
        if type(value) is int and 0 <= value <= MAX_PLAUSIBLE_TOKENS:  # the usual answer, at once
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type; 12.0 is 12
        if isinstance(value, bool) or not isinstance(value, int):
            # Numbers are quoted; anything else only by type and size: an upstream that echoes
            # the request may put a credential here, and the anomaly is logged and stored.
            shown = (
                repr(value)
                if isinstance(value, (bool, float))
                else f"<{type(value).__name__} of {len(str(value))} chars>"
            )
            self.problems.append(f"{name}={shown} (not an integer)"[:120])
            return 0
        if value < 0 or value > MAX_PLAUSIBLE_TOKENS:
            self.problems.append(f"{name}={value} (outside 0..{MAX_PLAUSIBLE_TOKENS})")
            return 0
        return value

    def usage(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        cache_creation_tokens: int = 0,
        cache_creation_1h_tokens: int = 0,
    ) -> Usage:
        problems = list(self.problems)
        inherited = self.raw.get(ANOMALY_FIELD)
        if isinstance(inherited, str) and inherited:
            problems.insert(0, inherited)
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            cache_creation_tokens=cache_creation_tokens,
            cache_creation_1h_tokens=cache_creation_1h_tokens,
            anomaly="; ".join(problems)[:500],
        )


@dataclass(slots=True)
class Usage:
    """Token counts in OpenAI's sense: ``prompt_tokens`` includes cached and cache-write tokens.

    ``anomaly`` is non-empty when the provider reported implausible counts (see
    ``UsageReader``); the counts are then not to be billed as they stand.

    ``cache_creation_1h_tokens`` is the part of ``cache_creation_tokens`` written to a
    one-hour cache (Anthropic's ``ttl: "1h"``), billed at its own price; the rest are
    five-minute writes.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    anomaly: str = ""

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> Usage | None:
        if not isinstance(usage, Mapping):
            return None
        reader = UsageReader(usage)
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, Mapping) else {}
        return reader.usage(
            prompt_tokens=reader.count("prompt_tokens"),
            completion_tokens=reader.count("completion_tokens"),
            cached_tokens=reader.count("cached_tokens", details),
            cache_creation_tokens=reader.count("cache_creation_tokens", details),
            cache_creation_1h_tokens=reader.count("cache_creation_1h_tokens", details),
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
        if self.anomaly:
            result[ANOMALY_FIELD] = self.anomaly
        return result


@dataclass(slots=True)
class Completion:
    body: dict[str, Any]
    usage: Usage | None


@dataclass(slots=True)
class Embeddings:
    """An OpenAI ``list`` of embeddings (``data[i].embedding`` floats or base64, as asked).

    ``usage`` is None when the provider reports no token count (Gemini): the request path
    then bills the gateway's own count of the input.
    """

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
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.error_type = error_type
        self.retryable = retryable and not client_error
        self.upstream_status = upstream_status
        self.client_error = client_error
        self.retry_after = retry_after  # seconds the upstream asked to wait (429/503 Retry-After)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float | None:
    """OpenAI's reset durations: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``."""
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long an upstream asked us to wait, from its response headers; None when it did not say.

    ``retry-after-ms`` (milliseconds), then ``retry-after`` (seconds or an HTTP date), then
    OpenAI's ``x-ratelimit-reset-requests`` / ``-tokens`` for whichever limit is used up
    (its ``x-ratelimit-remaining-*`` is 0).
    """
    try:
        value = headers.get("retry-after-ms")
        if value:
            seconds = float(value) / 1000
            return seconds if 0 < seconds < float("inf") else None
        value = headers.get("retry-after")
        if value:
            value = value.strip()
            if value.replace(".", "", 1).isdigit():
                seconds = float(value)
            else:
                from email.utils import parsedate_to_datetime

                seconds = (parsedate_to_datetime(value) - now()).total_seconds()
            return seconds if seconds > 0 else None
    except (TypeError, ValueError, OverflowError):
        return None
    waits = [
        wait
        for kind in ("requests", "tokens")
        if (headers.get(f"x-ratelimit-remaining-{kind}") or "").strip() == "0"
        and (wait := _duration(headers.get(f"x-ratelimit-reset-{kind}") or "")) is not None
    ]
    return max(waits) if waits and max(waits) > 0 else None


def error_for_status(
    provider: str, upstream_status: int, message: str, *, retry_after: float | None = None
) -> UpstreamError:
    """Map a provider's HTTP error status to what the client sees and whether to retry."""
    text = f"{provider}: {message}" if message else f"{provider} returned HTTP {upstream_status}"
    if upstream_status == 429:
        return UpstreamError(
            text,
            status=429,
            code="rate_limit_exceeded",
            error_type="rate_limit_error",
            upstream_status=429,
            retry_after=retry_after,
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
    return UpstreamError(
        text, status=502, code="upstream_error", upstream_status=upstream_status, retry_after=retry_after
    )


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


_Complete = Callable[..., Any]
_Stream = Callable[..., Iterator[Any]]


def _guard_complete(method: _Complete) -> _Complete:
    @functools.wraps(method)
    def complete(self: Any, target: Target, body: dict[str, Any], **kwargs: Any) -> Any:
        try:
            return method(self, target, body, **kwargs)
        except UpstreamError as error:
            raise redacted(target, error) from None
        except Exception as exc:  # noqa: BLE001 - logged (redacted) by adapter_failure
            raise adapter_failure(target, exc) from None

    return complete


def _guard_stream(method: _Stream) -> _Stream:
    @functools.wraps(method)
    def stream(self: Any, target: Target, body: dict[str, Any], **kwargs: Any) -> Iterator[Any]:
        try:
            yield from method(self, target, body, **kwargs)
        except UpstreamError as error:
            raise redacted(target, error) from None
        except Exception as exc:  # noqa: BLE001 - logged (redacted) by adapter_failure
            raise adapter_failure(target, exc) from None

    return stream


# Methods whose errors go through the one redaction path: the OpenAI-format calls, the
# embeddings call, and the Anthropic adapter's native Messages calls (``/v1/messages``).
_GUARDED = (
    ("complete", _guard_complete),
    ("stream", _guard_stream),
    ("embed", _guard_complete),
    ("messages", _guard_complete),
    ("messages_stream", _guard_stream),
)


def embeddings_unsupported(kind: str) -> UpstreamError:
    return UpstreamError(
        f"Providers of kind {kind!r} do not serve embeddings through the gateway.",
        status=400,
        code="unsupported_endpoint",
        error_type="invalid_request_error",
        client_error=True,
    )


class ProviderAdapter(ABC):
    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Route every adapter's errors through the one redaction path (see the module docstring).

        Done here rather than by each adapter so that none can forget it, a new adapter
        included. An adapter that extends another's method (Azure's ``stream``) is
        redacted twice, which changes nothing.
        """
        super().__init_subclass__(**kwargs)
        for name, guard in _GUARDED:
            if name in cls.__dict__:
                setattr(cls, name, guard(cls.__dict__[name]))

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

    def embed(self, target: Target, body: dict[str, Any]) -> Embeddings:
        """An OpenAI embeddings request (validated; do not mutate it) -> OpenAI's answer.

        ``body["encoding_format"]`` is ``float`` or ``base64`` (the gateway sets it); adapters
        whose provider answers in floats encode base64 themselves (``embeddings.encode``).
        """
        raise embeddings_unsupported(self.kind)
