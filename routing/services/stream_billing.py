"""How a started stream ends, and the one usage record each ending writes.

Once a stream's first event has reached the client nothing is retried; what is left is
to tell the client how it ended and to bill it exactly once. A stream ends in one of five
ways (``StreamOutcome``), each a method of ``StreamLedger``:

- ``completed``: the provider sent its usage, or the stream ended cleanly (then the
  gateway counts the tokens it relayed). Billed before the client learns the answer is
  whole (``[DONE]``, or the usage chunk that carries the cost).
- ``upstream_failed`` / ``truncated``: the upstream broke or cut the answer after it
  started. Billed with the gateway's count; the client gets an error event and no
  ``[DONE]``, so a cut answer never passes for a whole one.
- ``gateway_failed``: a bug of the gateway's own while relaying. Billed the same way.
- ``client_closed``: the client went away. Billed with what was relayed so far.

Whichever ending comes first is the record; later ones change nothing (a client that
leaves after the usage chunk was billed is not billed again). The ledger knows nothing
of pricing or recording: it hands a ``StreamEnd`` to a ``StreamBilling`` (the request's
call in routing/services/completion.py), which tests replace to drive each ending with a
scripted upstream (tests/routing/test_stream_billing.py).

``relay_openai_stream`` is the OpenAI wire format's loop over the upstream chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol

import orjson

from providers.adapters.base import UpstreamError, Usage
from usage.cost import format_usd

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


class StreamOutcome(Enum):
    COMPLETED = "completed"
    CLIENT_CLOSED = "client_closed"
    UPSTREAM_FAILED = "upstream_failed"
    TRUNCATED = "truncated"
    GATEWAY_FAILED = "gateway_failed"

    @property
    def status(self) -> str:
        """The usage record's ``status``."""
        return _STATUS[self]


_STATUS = {
    StreamOutcome.COMPLETED: "ok",
    StreamOutcome.CLIENT_CLOSED: "client_closed",
    StreamOutcome.UPSTREAM_FAILED: "error",
    StreamOutcome.TRUNCATED: "truncated",
    StreamOutcome.GATEWAY_FAILED: "error",
}


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """What is billed: how the stream ended and what it carried."""

    outcome: StreamOutcome
    usage: Usage | None  # the provider's; None: it never came, the gateway counts ``output_text``
    output_text: str
    http_status: int = 200
    error_code: str = ""


class StreamBilling(Protocol):
    """The request's side of a stream: timing and health of the upstream call, and the record."""

    provider: str
    deployment: str

    def upstream_ended(self, error: UpstreamError | None) -> None:
        """The upstream call is over (its usage came, it ended, or it failed)."""

    def settle(self, end: StreamEnd) -> tuple[Decimal | None, Decimal | None]:
        """Price and record the stream; called once. Returns (cost, the key's spend so far)."""
        ...

    def estimated_usage(self, output_text: str) -> Usage:
        """The gateway's own count: the request's input and ``output_text``."""
        ...

    def upstream_closed(self) -> None:
        """The upstream connection is closed, however the stream ended: free what the call held."""


class StreamLedger:
    """The billing state of one started stream: what it relayed, and its ending once it has one."""

    __slots__ = ("_billing", "texts", "_upstream_reported", "usage", "end")

    def __init__(self, billing: StreamBilling) -> None:
        self._billing = billing
        self.texts: list[str] = []  # the answer's text as relayed, for the gateway's own count
        self._upstream_reported = False
        self.usage: Usage | None = None
        self.end: StreamEnd | None = None

    @property
    def provider(self) -> str:
        return self._billing.provider

    @property
    def deployment(self) -> str:
        return self._billing.deployment

    # --- while relaying ---------------------------------------------------------

    @property
    def output_text(self) -> str:
        return "".join(self.texts)

    def usage_arrived(self, usage: Usage) -> None:
        """The provider's usage: the upstream call is done, its answer is whole."""
        self.usage = usage
        self._upstream_succeeded()

    def upstream_closed(self) -> None:
        self._billing.upstream_closed()

    def billed_usage(self) -> Usage:
        """The usage the stream is billed with: the provider's, unless missing or implausible (``anomaly``)."""
        if self.usage is None or self.usage.anomaly:
            return self._billing.estimated_usage(self.output_text)
        return self.usage

    # --- the endings --------------------------------------------------------------

    def completed(self) -> tuple[Decimal | None, Decimal | None]:
        """Bill the stream as whole; raises if recording fails (the caller decides what the client sees)."""
        self._upstream_succeeded()
        return self._settle(StreamOutcome.COMPLETED)

    def completed_logged(self) -> None:
        """``completed`` where the client gets its whole answer even if recording fails (logged)."""
        self._upstream_succeeded()
        self._settle_logged(StreamOutcome.COMPLETED, 200, "")

    def upstream_failed(self, error: UpstreamError) -> None:
        self._billing.upstream_ended(error)
        outcome = StreamOutcome.TRUNCATED if error.code == "upstream_truncated" else StreamOutcome.UPSTREAM_FAILED
        self._settle_logged(outcome, error.status, error.code)

    def gateway_failed(self) -> None:
        self._settle_logged(StreamOutcome.GATEWAY_FAILED, 502, "stream_error")

    def client_closed(self) -> None:
        """A no-op once the stream has an ending: only a client that left before one is billed so."""
        self._settle_logged(StreamOutcome.CLIENT_CLOSED, 200, "client_closed")

    # ------------------------------------------------------------------------------

    def _upstream_succeeded(self) -> None:
        if not self._upstream_reported:
            self._upstream_reported = True
            self._billing.upstream_ended(None)

    def _settle(
        self, outcome: StreamOutcome, http_status: int = 200, error_code: str = ""
    ) -> tuple[Decimal | None, Decimal | None]:
        if self.end is not None:
            return None, None
        self.end = StreamEnd(outcome, self.usage, self.output_text, http_status, error_code)
        return self._billing.settle(self.end)

    def _settle_logged(self, outcome: StreamOutcome, http_status: int, error_code: str) -> None:
        try:
            self._settle(outcome, http_status, error_code)
        except Exception:
            logger.exception("could not record the usage of a stream that ended as %s", outcome.value)


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _error_event(message: str, error_type: str, code: str) -> bytes:
    return _sse({"error": {"message": message, "type": error_type, "code": code}})


def relay_openai_stream(
    upstream: Iterator[dict[str, Any]], first: dict[str, Any], *, wants_usage: bool, ledger: StreamLedger
) -> Iterator[bytes]:
    """The client's server-sent events for an OpenAI-shaped upstream stream; every way out is billed.

    ``wants_usage`` (the request's ``stream_options.include_usage``): the usage chunk is
    passed on with the cost (``x_gateway``), else it is dropped.
    """
    try:
        chunk: dict[str, Any] | None = first
        while chunk is not None:
            event = _relay_chunk(chunk, wants_usage, ledger)
            if event is not None:
                yield event
            chunk = next(upstream, None)
        ledger.completed_logged()  # a no-op if the usage chunk was billed
        yield DONE
    except UpstreamError as error:
        # Recorded first, so the record exists by the time the client knows (the openai SDK
        # raises APIError on the error event).
        ledger.upstream_failed(error)
        yield _error_event(error.message, error.error_type, error.code)
    except Exception:
        logger.exception("a stream failed in the gateway")
        ledger.gateway_failed()
        yield _error_event("The gateway failed while streaming.", "api_error", "stream_error")
    finally:
        close = getattr(upstream, "close", None)
        if close is not None:
            close()
        ledger.upstream_closed()
        ledger.client_closed()


def _relay_chunk(chunk: dict[str, Any], wants_usage: bool, ledger: StreamLedger) -> bytes | None:
    raw_usage = chunk.get("usage")
    for choice in chunk.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            ledger.texts.append(content)
    if not raw_usage:
        return _sse(chunk)
    usage = Usage.from_openai(raw_usage)
    if usage is not None:
        ledger.usage_arrived(usage)
    if wants_usage:
        cost, spend = ledger.completed()  # before the client sees the chunk that says it is whole
        if usage is not None and usage.anomaly:  # the usage billed, as in plain answers
            chunk["usage"] = ledger.billed_usage().to_openai()
        chunk["x_gateway"] = {
            "cost_usd": format_usd(cost),
            "key_spend_usd": format_usd(spend) if spend is not None else None,
            "provider": ledger.provider,
            "deployment": ledger.deployment,
        }
        return _sse(chunk)
    chunk.pop("usage", None)
    return _sse(chunk) if chunk.get("choices") else None
