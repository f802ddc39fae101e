"""The chat completion request path: route, call with fallback, price, record.

view -> ``run_completion`` -> strategy (planning.py) -> adapter -> ``CompletionResult``.
Fallback: a retryable failure before the first byte reaches the client moves on to the
next candidate, up to ``max_attempts``. Once a stream has started nothing is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings as django_settings

from gatewaysite.api.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamFailed,
    UpstreamTimeout,
    error_body,
)
from gatewaysite.clock import monotonic, now
from providers.adapters.base import UpstreamError, Usage
from providers.adapters.registry import adapter_for
from providers.pricing.cost import cost_of, format_usd, from_picodollars
from routing.config.cache import config_cache
from routing.config.snapshot import DeploymentInfo
from routing.cooldowns import cooldowns
from routing.inflight import in_flight
from routing.outlier import outliers
from routing.services import hedging
from routing.services.planning import plan_route
from routing.services.stream_billing import StreamEnd, StreamLedger, relay_openai_stream
from routing.strategies.base import Ranking, RouteRequest
from usage import budgets
from usage.admission import Admission, admit, next_candidate
from usage.events import LatencySampleData, PendingEvent, UsageRecordData
from usage.latency.live import live_latency
from usage.observers import observe_usage
from usage.recorder import get_recorder
from usage.tokens import count_text_tokens

logger = logging.getLogger(__name__)


@dataclass
class Attempt:
    deployment: DeploymentInfo
    started_at: datetime
    ok: bool = False
    http_status: int = 200
    upstream_ms: float = 0.0
    ttft_ms: float | None = None
    error_code: str = ""


@dataclass
class CompletionResult:
    status: int
    headers: dict[str, str]
    body: bytes | None = None
    stream: Iterator[bytes] | None = None


@dataclass
class _Call:
    """State of one request while it is being served."""

    route: RouteRequest
    request_id: str
    received: float  # monotonic
    received_at: datetime
    ranking: Ranking | None = None
    attempts: list[Attempt] = field(default_factory=list)
    reservation: budgets.Reservation | None = None
    admission: Admission | None = None
    finished: bool = False
    served: Attempt | None = None  # the attempt whose answer the client got (default: the last one)
    hedge_loser: Attempt | None = None  # a hedged request's other attempt
    hedge_loser_usage: Usage | None = None  # its real usage, when it finished anyway

    def headers(self, deployment: DeploymentInfo | None) -> dict[str, str]:
        headers = {"x-gateway-attempts": str(len(self.attempts))}
        if self.admission is not None:
            headers.update(self.admission.headers())
        if self.hedge_loser is not None:
            headers["x-gateway-hedged"] = self.hedge_loser.deployment.name
        if self.ranking is not None:
            headers["x-gateway-strategy"] = self.ranking.strategy
            headers["x-gateway-route-reason"] = self.ranking.reason or self.ranking.strategy
        if deployment is not None:
            headers["x-gateway-provider"] = deployment.provider
            headers["x-gateway-deployment"] = deployment.name
        return headers

    def finish(
        self,
        *,
        status: str,
        http_status: int,
        usage: Usage | None,
        usage_estimated: bool = False,
        error_code: str = "",
        output_text: str = "",
    ) -> tuple[Decimal | None, Decimal | None]:
        """Price the request and record it (once). Returns (cost, key spend so far).

        Usage the provider reported implausibly (``Usage.anomaly``) is kept on the record
        as text and billed as the gateway's own estimate (``output_text`` counted).
        """
        if self.finished:
            return None, None
        self.finished = True
        total_ms = (monotonic() - self.received) * 1000
        served = self.served or (self.attempts[-1] if self.attempts else None)
        deployment = served.deployment if served else None
        # the row in effect at receipt, from a snapshot known to hold it (gatewaysite/config/notice.py)
        price = (
            config_cache.pricing_snapshot(self.received_at).price_for(deployment, self.received_at)
            if deployment
            else None
        )
        usage = usage or Usage()
        anomaly = usage.anomaly
        if anomaly:
            logger.warning("request %s: implausible upstream usage (%s); billing an estimate", self.request_id, anomaly)
            usage = self.estimated_usage(output_text)
            usage_estimated = True
        cost = cost_of(usage, price) if price is not None else None  # a failure before output costs 0
        hedge_cost = self.hedge_cost()
        if hedge_cost is not None and cost is not None:
            cost += hedge_cost  # billed to the key: the upstream charges for both copies
        key = self.route.key
        upstream_total = sum(a.upstream_ms for a in self.attempts)
        record = UsageRecordData(
            request_id=self.request_id,
            created_at=self.received_at,  # orjson writes datetimes natively (RFC 3339)
            client_key_id=key.id,
            key_name=key.name,
            key_prefix=key.prefix,
            team=key.team,
            provider=deployment.provider if deployment else "",
            deployment=deployment.name if deployment else "",
            model=self.route.model,
            provider_model=deployment.provider_model if deployment else "",
            strategy=self.ranking.strategy if self.ranking else "",
            route_reason=(self.ranking.reason if self.ranking else "")[:200],
            status=status,
            http_status=http_status,
            error_code=error_code[:64],
            stream=self.route.stream,
            endpoint=self.route.endpoint,
            attempts=len(self.attempts),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_creation_tokens=usage.cache_creation_tokens,
            cache_creation_1h_tokens=usage.cache_creation_1h_tokens,
            usage_estimated=usage_estimated,
            usage_anomaly=anomaly,
            cost_usd=cost,
            pricing_row_id=price.id if price is not None else None,
            hedged=self.hedge_loser is not None,
            hedge_cost_usd=hedge_cost,
            latency_ms=round(total_ms, 3),
            upstream_ms=round(upstream_total, 3),
            ttft_ms=served.ttft_ms if served else None,
        )
        samples = []
        for index, attempt in enumerate(self.attempts, start=1):
            last = attempt is served
            attempt_total = total_ms if last else attempt.upstream_ms
            samples.append(
                LatencySampleData(
                    request_id=self.request_id,
                    attempt=index,
                    created_at=attempt.started_at,
                    provider=attempt.deployment.provider,
                    deployment=attempt.deployment.name,
                    model=self.route.model,
                    ok=attempt.ok,
                    http_status=attempt.http_status,
                    stream=self.route.stream,
                    total_ms=round(attempt_total, 3),
                    upstream_ms=round(attempt.upstream_ms, 3),
                    ttft_ms=attempt.ttft_ms,
                    overhead_ms=round(max(0.0, total_ms - upstream_total), 3) if last else 0.0,
                )
            )
        observe_usage(record, samples)  # metrics and the request log line
        counters = budgets.settle_counters(key, self.reservation, cost)
        if self.admission is not None:
            counters += self.admission.settle(usage)
        event = PendingEvent(record=record, samples=samples, counters=counters)
        values = get_recorder().record(event)
        spend = from_picodollars(values[0]) if values else None
        return cost, spend

    def hedge_cost(self) -> Decimal | None:
        """What the hedged request's other attempt costs: real when it finished, else its input tokens."""
        loser = self.hedge_loser
        if loser is None:
            return None
        price = self.route.snapshot.price_for(loser.deployment, self.received_at)
        if price is None:
            return None
        usage = self.hedge_loser_usage
        if usage is None or usage.anomaly:
            prompt, _ = self.route.input_tokens()
            usage = Usage(prompt_tokens=prompt)
        return cost_of(usage, price)

    def estimated_usage(self, output_text: str) -> Usage:
        """The gateway's own count: the request's input estimate and the output it relayed."""
        prompt, _ = self.route.input_tokens()
        return Usage(prompt_tokens=prompt, completion_tokens=count_text_tokens(self.route.model, output_text))

    def fail_response(self, error: GatewayError) -> CompletionResult:
        budgets.release(self.reservation)
        self.finish(status="error", http_status=error.status_code, usage=None, error_code=error.code)
        body = error_body(str(error.detail), error_type=error.error_type, code=error.code, param=error.param)
        headers = self.headers(self.attempts[-1].deployment if self.attempts else None)
        headers["content-type"] = "application/json"
        return CompletionResult(status=error.status_code, headers=headers, body=body)


def _as_gateway_error(error: UpstreamError) -> GatewayError:
    if error.status == 429:
        return RateLimited(error.message, code=error.code)
    if error.status == 504:
        return UpstreamTimeout(error.message, code=error.code)
    if error.client_error:
        return InvalidRequest(error.message, code=error.code)
    return UpstreamFailed(error.message, code=error.code)


def _record_attempt(call: _Call, attempt: Attempt, error: UpstreamError | None) -> None:
    settings = call.route.snapshot.settings
    name = attempt.deployment.name
    stream = call.route.stream
    if error is None:
        cooldowns.success(name)
        latency = attempt.ttft_ms if attempt.ttft_ms is not None else attempt.upstream_ms
        live_latency.observe(name, latency, True, stream=stream)
        outliers.observe(
            name,
            attempt.deployment.model_name,
            ok=True,
            server_error=False,
            latency_ms=latency,
            snapshot=call.route.snapshot,
        )
        return
    attempt.ok = False
    attempt.http_status = error.status
    attempt.error_code = error.code
    if not error.client_error:
        cooldowns.failure(name, threshold=settings.cooldown_failures, cooldown_seconds=settings.cooldown_seconds)
        if error.retry_after is not None:  # the upstream said when to come back: not before
            cooldowns.cool_for(name, min(error.retry_after, float(django_settings.GATEWAY["RETRY_AFTER_MAX_SECONDS"])))
        live_latency.observe(name, attempt.upstream_ms, False, stream=stream)
        outliers.observe(
            name,
            attempt.deployment.model_name,
            ok=False,
            server_error=error.status >= 500,
            latency_ms=attempt.upstream_ms,
            snapshot=call.route.snapshot,
        )


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _cost_headers(headers: dict[str, str], cost: Decimal | None, spend: Decimal | None) -> None:
    headers["x-gateway-cost-usd"] = format_usd(cost)
    if spend is not None:
        headers["x-gateway-key-spend-usd"] = format_usd(spend)


def run_completion(route: RouteRequest, *, request_id: str, received: float) -> CompletionResult:
    call = _Call(route=route, request_id=request_id, received=received, received_at=now())
    call.ranking = plan_route(route)
    call.admission = admit(route, call.ranking.candidates)  # rate limits and budget: one round trip
    call.reservation = call.admission.reservation
    max_attempts = route.snapshot.settings.max_attempts
    candidates = call.ranking.candidates
    last_error: UpstreamError | None = None
    index = call.admission.chosen  # candidates before it are at their own rate limit
    tried: set[str] = set()
    plan = (
        hedging.hedge_plan(route, call.ranking, candidates[index : index + max_attempts]) if index is not None else None
    )
    if plan is not None and index is not None:
        result, last_error, tried = _hedged_first_attempt(call, candidates[index], plan)
        if result is not None:
            return result
        retryable = last_error is None or last_error.retryable
        index = next_candidate(call.admission, route, candidates, index + 1) if retryable else None
    while index is not None and len(call.attempts) < max_attempts:
        deployment = candidates[index]
        if deployment.name in tried:  # the hedge's second copy failed already
            index = next_candidate(call.admission, route, candidates, index + 1)
            continue
        attempt = Attempt(deployment=deployment, started_at=now())
        call.attempts.append(attempt)
        adapter = adapter_for(deployment.kind)
        started = monotonic()
        in_flight.acquire(deployment.name)
        try:
            if route.stream:
                upstream = adapter.stream(deployment.target, route.body)
                first = next(upstream, None)
                attempt.ttft_ms = (monotonic() - started) * 1000
                if first is None:
                    raise UpstreamError(f"{deployment.provider}: empty stream", status=502)
            else:
                completion = adapter.complete(deployment.target, route.body)
        except UpstreamError as error:
            in_flight.release(deployment.name)
            attempt.upstream_ms = (monotonic() - started) * 1000
            _record_attempt(call, attempt, error)
            last_error = error
            if not error.retryable:
                break
            index = next_candidate(call.admission, route, candidates, index + 1)
            continue
        except Exception:  # an adapter bug must not lose the record or hide the fallback
            in_flight.release(deployment.name)
            logger.exception("adapter %s failed on deployment %s", deployment.kind, deployment.name)
            attempt.upstream_ms = (monotonic() - started) * 1000
            last_error = UpstreamError(f"{deployment.provider}: the gateway could not translate the answer", status=502)
            _record_attempt(call, attempt, last_error)
            index = next_candidate(call.admission, route, candidates, index + 1)
            continue
        attempt.ok = True
        if route.stream:
            assert first is not None  # an empty stream raised above
            return _stream_result(call, attempt, upstream, first, started)
        in_flight.release(deployment.name)
        attempt.upstream_ms = (monotonic() - started) * 1000
        return _completion_result(call, attempt, completion)
    if last_error is None:
        last_error = UpstreamError("No deployment could take this request.", status=502)
    return call.fail_response(_as_gateway_error(last_error))


def _completion_result(call: _Call, attempt: Attempt, completion: Any) -> CompletionResult:
    """A non-streaming answer: record the attempt, price and record the request, answer."""
    _record_attempt(call, attempt, None)
    anomaly = completion.usage is not None and bool(completion.usage.anomaly)
    output_text = _output_text(completion.body) if anomaly else ""  # read only to bill an implausible usage
    cost, spend = call.finish(status="ok", http_status=200, usage=completion.usage, output_text=output_text)
    if anomaly:
        # The client sees the usage it is billed for, never the implausible values (an
        # upstream that echoes the request may have put a credential there).
        completion.body["usage"] = call.estimated_usage(output_text).to_openai()
    headers = call.headers(attempt.deployment)
    headers["content-type"] = "application/json"
    _cost_headers(headers, cost, spend)
    return CompletionResult(status=200, headers=headers, body=orjson.dumps(completion.body))


def _hedged_first_attempt(
    call: _Call, primary: DeploymentInfo, plan: hedging.HedgePlan
) -> tuple[CompletionResult | None, UpstreamError | None, set[str]]:
    """The first attempt, hedged (routing/services/hedging.py).

    Returns the response when an attempt answered, else the last error and the
    deployments tried, for the fallback to go on with the others.
    """
    legs, winner = hedging.race(call.route, primary, plan)
    last_error: UpstreamError | None = None
    for leg in legs:
        attempt = Attempt(deployment=leg.deployment, started_at=leg.started_at)
        attempt.upstream_ms = leg.upstream_ms
        attempt.ttft_ms = leg.ttft_ms
        call.attempts.append(attempt)
        if leg is winner:
            attempt.ok = True
            call.served = attempt
            continue
        if len(legs) > 1 and winner is not None:
            call.hedge_loser = attempt
        if leg.cancelled:
            # Cut before it answered: not the deployment's failure (no cooldown, no ejection), but
            # its latency is at least this long, which the live p95 should know.
            attempt.ok = False
            attempt.http_status = hedging.CANCELLED_STATUS
            attempt.error_code = hedging.CANCELLED_CODE
            live_latency.observe(leg.deployment.name, leg.upstream_ms, True, stream=call.route.stream)
        elif leg.error is not None:
            _record_attempt(call, attempt, leg.error)
            last_error = leg.error
        else:  # it answered too, just later: a real answer, and its real usage is billed
            attempt.ok = True
            _record_attempt(call, attempt, None)
            if leg.completion is not None:
                call.hedge_loser_usage = leg.completion.usage
    tried = {leg.deployment.name for leg in legs}
    if winner is None:
        return None, last_error, tried
    served = call.served
    assert served is not None
    if call.route.stream:
        assert winner.upstream is not None and winner.first is not None
        winner.holds_busy = False  # the stream's end releases it
        return _stream_result(call, served, winner.upstream, winner.first, winner.started), None, tried
    return _completion_result(call, served, winner.completion), None, tried


def _output_text(body: dict[str, Any]) -> str:
    """The answer's text, for the gateway's own token count (only when the provider's is implausible)."""
    texts = []
    for choice in body.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.append(message["content"])
    return "".join(texts)


class CallStreamBilling:
    """A stream's billing on the request's call: the attempt's timing and health, then ``finish``."""

    __slots__ = ("call", "attempt", "started", "provider", "deployment")

    def __init__(self, call: _Call, attempt: Attempt, started: float) -> None:
        self.call = call
        self.attempt = attempt
        self.started = started
        self.provider = attempt.deployment.provider
        self.deployment = attempt.deployment.name

    def upstream_ended(self, error: UpstreamError | None) -> None:
        self.attempt.upstream_ms = (monotonic() - self.started) * 1000
        _record_attempt(self.call, self.attempt, error)

    def estimated_usage(self, output_text: str) -> Usage:
        return self.call.estimated_usage(output_text)

    def upstream_closed(self) -> None:
        in_flight.release(self.deployment)  # held since the attempt started (run_completion, hedging)

    def settle(self, end: StreamEnd) -> tuple[Decimal | None, Decimal | None]:
        if self.attempt.upstream_ms == 0:  # the client left or the gateway failed mid-stream
            self.attempt.upstream_ms = (monotonic() - self.started) * 1000
        return self.call.finish(
            status=end.outcome.status,
            http_status=end.http_status,
            usage=end.usage or self.estimated_usage(end.output_text),
            usage_estimated=end.usage is None,
            error_code=end.error_code,
            output_text=end.output_text,
        )


def _stream_result(
    call: _Call, attempt: Attempt, upstream: Iterator[dict[str, Any]], first: dict[str, Any], started: float
) -> CompletionResult:
    headers = call.headers(attempt.deployment)
    headers.update({"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"})
    ledger = StreamLedger(CallStreamBilling(call, attempt, started))
    events = relay_openai_stream(upstream, first, wants_usage=_wants_usage(call.route.body), ledger=ledger)
    return CompletionResult(status=200, headers=headers, stream=events)
