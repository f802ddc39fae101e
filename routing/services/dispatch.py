"""The fallback loop for the entry points beside chat completions (embeddings, messages).

The same rules as ``run_completion`` (routing/services/completion.py), on the same
``_Call`` state, the same admission (rate limits, budget, deployments' own limits) and the same per-attempt bookkeeping (health, live latency, latency
samples): candidates in the strategy's order up to ``max_attempts``; a retryable failure
before the first byte reaches the client moves on to the next; errors the client caused
are never retried. What one attempt sends, and what the client gets, is the caller's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from gatewaysite.clock import monotonic, now
from providers.adapters.base import UpstreamError
from routing.config.snapshot import DeploymentInfo
from routing.services.completion import Attempt, _Call, _record_attempt
from usage.admission import next_candidate

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AttemptsExhausted(Exception):
    """Every candidate tried failed; ``error`` is the last failure."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


def first_success(
    call: _Call, send: Callable[[DeploymentInfo, Attempt, float], T], *, streaming: bool = False
) -> tuple[Attempt, T, float]:
    """(attempt, what ``send`` returned, its monotonic start) for the first candidate that answers.

    ``send(deployment, attempt, started)`` raises ``UpstreamError`` on failure. A non-streaming
    success is recorded as such here; a stream's attempt is settled by its caller when it ends.
    """
    assert call.ranking is not None and call.admission is not None
    last_error: UpstreamError | None = None
    candidates = call.ranking.candidates
    index = call.admission.chosen  # candidates before it are at their own rate limit
    while index is not None and len(call.attempts) < call.route.snapshot.settings.max_attempts:
        deployment = candidates[index]
        index = index + 1
        attempt = Attempt(deployment=deployment, started_at=now())
        call.attempts.append(attempt)
        started = monotonic()
        try:
            result = send(deployment, attempt, started)
        except UpstreamError as error:
            attempt.upstream_ms = (monotonic() - started) * 1000
            _record_attempt(call, attempt, error)
            last_error = error
            if not error.retryable:
                break
            index = next_candidate(call.admission, call.route, candidates, index)
            continue
        except Exception:  # a bug in a translation must not lose the record or hide the fallback
            logger.exception("call to deployment %s failed in the gateway", deployment.name)
            attempt.upstream_ms = (monotonic() - started) * 1000
            last_error = UpstreamError(f"{deployment.provider}: the gateway could not translate the answer", status=502)
            _record_attempt(call, attempt, last_error)
            index = next_candidate(call.admission, call.route, candidates, index)
            continue
        attempt.ok = True
        if not streaming:
            attempt.upstream_ms = (monotonic() - started) * 1000
            _record_attempt(call, attempt, None)
        return attempt, result, started
    if last_error is None:
        last_error = UpstreamError("No deployment could take this request.", status=502)
    raise AttemptsExhausted(last_error)
