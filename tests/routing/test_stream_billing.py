"""The endings of a started stream, each driven by a scripted upstream (routing/services/stream_billing.py).

The request's side (pricing, recording) is replaced by ``Billing``, which keeps what it
was handed; the same paths run end to end against live upstream fakes in
test_truncated_streams.py, test_fallback.py, test_deadlines.py and test_completions_sdk.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from providers.adapters.base import UpstreamError, Usage
from routing.services.stream_billing import (
    DONE,
    StreamEnd,
    StreamLedger,
    StreamOutcome,
    relay_openai_stream,
)


class Billing:
    provider = "p1"
    deployment = "d1"

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.upstream: list[UpstreamError | None] = []
        self.ends: list[StreamEnd] = []
        self.closed = 0  # upstream_closed calls: exactly one per stream, however it ended

    def upstream_ended(self, error: UpstreamError | None) -> None:
        self.upstream.append(error)

    def settle(self, end: StreamEnd) -> tuple[Decimal | None, Decimal | None]:
        self.ends.append(end)
        if self.fail:
            raise RuntimeError("the recorder is down")
        return Decimal("0.000012"), Decimal("1.5")

    def estimated_usage(self, output_text: str) -> Usage:
        return Usage(prompt_tokens=3, completion_tokens=len(output_text))

    def upstream_closed(self) -> None:
        self.closed += 1


def text(content: str) -> dict[str, Any]:
    return {"id": "c1", "choices": [{"index": 0, "delta": {"content": content}}]}


def usage() -> dict[str, Any]:
    return {"id": "c1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}


def scripted(*steps: dict[str, Any] | Exception) -> tuple[Iterator[dict[str, Any]], dict[str, Any], list[str]]:
    """An upstream that yields the chunks and raises the exceptions in order; notes when it is closed."""
    closed: list[str] = []

    def upstream() -> Iterator[dict[str, Any]]:
        try:
            for step in steps[1:]:
                if isinstance(step, Exception):
                    raise step
                yield step
        finally:
            closed.append("closed")

    first = steps[0]
    assert isinstance(first, dict)
    return upstream(), first, closed


def events(raw: list[bytes]) -> list[Any]:
    return [orjson.loads(e[len(b"data: ") :]) if e != DONE else "[DONE]" for e in raw]


def test_completed_with_the_providers_usage_bills_it_before_the_usage_chunk_reaches_the_client() -> None:
    upstream, first, closed = scripted(text("Hel"), text("lo"), usage())
    billing = Billing()
    stream = relay_openai_stream(upstream, first, wants_usage=True, ledger=StreamLedger(billing))
    received = [next(stream), next(stream)]
    assert billing.ends == []  # nothing billed while the answer is still coming
    received.append(next(stream))  # the usage chunk
    assert [end.outcome for end in billing.ends] == [StreamOutcome.COMPLETED]
    received += list(stream)
    out = events(received)
    assert out[-1] == "[DONE]"
    assert out[2]["x_gateway"] == {"cost_usd": "0.000012", "key_spend_usd": "1.5", "provider": "p1", "deployment": "d1"}
    (end,) = billing.ends
    assert end == StreamEnd(StreamOutcome.COMPLETED, Usage(prompt_tokens=7, completion_tokens=2), "Hello")
    assert end.outcome.status == "ok"
    assert billing.upstream == [None]  # the upstream call reported once, as a success
    assert closed == ["closed"] and billing.closed == 1


def test_completed_without_usage_is_billed_on_the_gateways_count_and_the_usage_chunk_is_dropped() -> None:
    upstream, first, _ = scripted(text("Hi"), usage())
    billing = Billing()
    out = events(list(relay_openai_stream(upstream, first, wants_usage=False, ledger=StreamLedger(billing))))
    assert out == [text("Hi"), "[DONE]"]  # the usage chunk had no choices: not passed on
    assert [(e.outcome, e.usage) for e in billing.ends] == [(StreamOutcome.COMPLETED, Usage(7, 2))]

    upstream, first, _ = scripted(text("Hi"), text(" there"))
    billing = Billing()
    out = events(list(relay_openai_stream(upstream, first, wants_usage=False, ledger=StreamLedger(billing))))
    assert out[-1] == "[DONE]"
    (end,) = billing.ends
    assert (end.outcome, end.usage, end.output_text) == (StreamOutcome.COMPLETED, None, "Hi there")
    assert billing.upstream == [None]


@pytest.mark.parametrize(
    ("code", "outcome", "status"),
    [
        ("upstream_truncated", StreamOutcome.TRUNCATED, "truncated"),
        ("upstream_error", StreamOutcome.UPSTREAM_FAILED, "error"),
    ],
)
def test_an_upstream_that_breaks_is_billed_then_told_with_an_error_event_and_no_done(
    code: str, outcome: StreamOutcome, status: str
) -> None:
    error = UpstreamError("p1: cut", status=502, code=code)
    upstream, first, closed = scripted(text("Par"), text("tial"), error)
    billing = Billing()
    out = events(list(relay_openai_stream(upstream, first, wants_usage=True, ledger=StreamLedger(billing))))
    assert out[:2] == [text("Par"), text("tial")]
    assert out[2] == {"error": {"message": "p1: cut", "type": "api_error", "code": code}}
    assert "[DONE]" not in out
    (end,) = billing.ends
    assert end == StreamEnd(outcome, None, "Partial", 502, code)
    assert end.outcome.status == status
    assert billing.upstream == [error]  # its health learns of the failure
    assert closed == ["closed"] and billing.closed == 1


def test_a_client_that_leaves_is_billed_for_what_was_relayed_and_the_upstream_is_closed() -> None:
    upstream, first, closed = scripted(text("One"), text(" two"), text(" three"))
    billing = Billing()
    stream = relay_openai_stream(upstream, first, wants_usage=False, ledger=StreamLedger(billing))
    next(stream), next(stream)
    stream.close()  # what the server does when the client hangs up
    (end,) = billing.ends
    assert end == StreamEnd(StreamOutcome.CLIENT_CLOSED, None, "One two", 200, "client_closed")
    assert end.outcome.status == "client_closed"
    assert billing.upstream == []  # the upstream did not fail: no health report either way
    assert closed == ["closed"] and billing.closed == 1


def test_a_client_that_leaves_after_the_usage_chunk_is_not_billed_twice() -> None:
    upstream, first, _ = scripted(text("Hi"), usage())
    billing = Billing()
    stream = relay_openai_stream(upstream, first, wants_usage=True, ledger=StreamLedger(billing))
    next(stream), next(stream)  # the text and the usage chunk (billed)
    stream.close()  # gone before [DONE]
    assert [e.outcome for e in billing.ends] == [StreamOutcome.COMPLETED]


def test_a_failure_of_the_gateways_own_is_billed_and_told_as_stream_error() -> None:
    upstream, first, closed = scripted(text("Hi"), {"choices": "not a list"})
    billing = Billing()
    out = events(list(relay_openai_stream(upstream, first, wants_usage=False, ledger=StreamLedger(billing))))
    assert out[-1] == {
        "error": {"message": "The gateway failed while streaming.", "type": "api_error", "code": "stream_error"}
    }
    (end,) = billing.ends
    assert end == StreamEnd(StreamOutcome.GATEWAY_FAILED, None, "Hi", 502, "stream_error")
    assert end.outcome.status == "error"
    assert closed == ["closed"] and billing.closed == 1


def test_a_recorder_failure_at_the_end_still_gives_the_client_its_whole_answer() -> None:
    upstream, first, _ = scripted(text("Hi"))
    billing = Billing(fail=True)
    out = events(list(relay_openai_stream(upstream, first, wants_usage=False, ledger=StreamLedger(billing))))
    assert out == [text("Hi"), "[DONE]"]
    assert [e.outcome for e in billing.ends] == [StreamOutcome.COMPLETED]  # tried once, never again


def test_the_ledger_bills_only_its_first_ending() -> None:
    billing = Billing()
    ledger = StreamLedger(billing)
    ledger.texts.append("x")
    ledger.upstream_failed(UpstreamError("cut", code="upstream_truncated"))
    ledger.gateway_failed()
    ledger.client_closed()
    assert ledger.completed() == (None, None)
    assert [e.outcome for e in billing.ends] == [StreamOutcome.TRUNCATED]
    assert ledger.end == billing.ends[0]


def test_every_outcome_maps_to_a_record_status() -> None:
    assert {o: o.status for o in StreamOutcome} == {
        StreamOutcome.COMPLETED: "ok",
        StreamOutcome.CLIENT_CLOSED: "client_closed",
        StreamOutcome.UPSTREAM_FAILED: "error",
        StreamOutcome.TRUNCATED: "truncated",
        StreamOutcome.GATEWAY_FAILED: "error",
    }


def test_implausible_usage_is_billed_and_shown_as_the_gateways_count() -> None:
    implausible = {"id": "c1", "choices": [], "usage": {"prompt_tokens": -4, "completion_tokens": 2}}
    upstream, first, _ = scripted(text("Hello"), implausible)
    billing = Billing()
    out = events(list(relay_openai_stream(upstream, first, wants_usage=True, ledger=StreamLedger(billing))))
    (end,) = billing.ends
    assert end.outcome is StreamOutcome.COMPLETED and end.usage is not None and end.usage.anomaly
    assert out[1]["usage"]["prompt_tokens"] == 3 and out[1]["usage"]["completion_tokens"] == 5  # the estimate
