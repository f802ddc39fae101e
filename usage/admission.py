"""Admitting a request: rate limits and budget reservation together, in one Redis round trip.

``admit`` runs after planning, with the ranked candidates. One call of the admission
script (usage/ratelimits.py) checks the key's and team's rate limits, reserves the budget
(usage/budgets.py) and picks the first candidate deployment below its own limits; it
writes nothing unless all of it passes. A key with no limit and no budget, asking for
deployments with no limit, costs no round trip at all.

Falling back to a later candidate after a failed attempt checks that deployment's limits
again (one more round trip, only when it has limits).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

from accounts.keycache import KeyInfo
from gatewaysite.api.errors import RateLimited
from gatewaysite.redis import SLOT, get_redis, slot_client
from providers.adapters.base import Usage
from routing.config.snapshot import DeploymentInfo
from routing.strategies.base import RouteRequest
from usage import budgets
from usage.events import CounterIncrement
from usage.ratelimits import (
    ADMIT_SCRIPT,
    REQUESTS,
    TOKENS,
    DeploymentLimits,
    Limit,
    LimitState,
    RateCheck,
    ScriptCall,
    client_limits,
    format_duration,
    local_windows,
    now_ms,
    reset_ms,
    script_call,
    settle_increments,
    settle_locally,
    wait_ms,
)

logger = logging.getLogger(__name__)


class AdmissionBatcher:
    """Group commit for admission scripts, like the usage recorder's: concurrent requests hand
    their call to one writer per process, which sends everything queued as one pipeline of
    EVALSHAs and wakes them. Each request still waits for its own script's answer (one round
    trip), but under load one round trip answers many requests: a lone EVALSHA per request
    cost about a quarter of a gevent worker's throughput (docs/benchmark.md)."""

    def __init__(self) -> None:
        from usage.recorder import GroupCommitWriter

        self._writer: GroupCommitWriter[ScriptCall, list[Any]] = GroupCommitWriter(self._flush, "admission-writer")

    def _flush(self, calls: list[ScriptCall]) -> list[list[Any]]:
        client = get_redis()
        assert client is not None
        script = budgets._script(client, 0)
        replies = self._send(client, script.sha, calls)
        if any(isinstance(r, NoScriptError) for r in replies):  # Redis restarted: load it, send those again
            client.script_load(ADMIT_SCRIPT)
            again = [c for c, r in zip(calls, replies, strict=True) if isinstance(r, NoScriptError)]
            resent = iter(self._send(client, script.sha, again))
            replies = [next(resent) if isinstance(r, NoScriptError) else r for r in replies]
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    @staticmethod
    def _send(client: Any, sha: str, calls: list[ScriptCall]) -> list[Any]:
        pipe = slot_client(client).pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(sha, len(call.keys), *call.keys, *call.args)
        return pipe.execute(raise_on_error=False)

    def run(self, call: ScriptCall) -> list[Any]:
        return self._writer.submit(call)


_batcher: AdmissionBatcher | None = None


def batcher() -> AdmissionBatcher:
    global _batcher
    if _batcher is None:
        _batcher = AdmissionBatcher()
    return _batcher


_KIND_WORDS = {REQUESTS: "requests per minute (RPM)", TOKENS: "tokens per minute (TPM)"}


@dataclass
class Admission:
    """What admitting one request decided and holds."""

    reservation: budgets.Reservation | None = None
    rate: RateCheck | None = None
    chosen: int | None = 0  # index of the first candidate to try; None: every candidate is at its limit
    tokens: int = 0  # input tokens charged to token limits
    token_bases: list[str] = field(default_factory=list)  # token counters charged (client limits)
    deployment_token_base: str | None = None  # the token counter of the deployment charged last
    local: bool = False  # counted in process (embedded default, or Redis unreachable)
    settled: bool = False

    def headers(self) -> dict[str, str]:
        return self.rate.headers(admitted=True) if self.rate is not None else {}

    def settle(self, usage: Usage) -> list[CounterIncrement]:
        """Token counters move from the charged input to the real usage; for the recorder's pipeline."""
        if self.settled:
            return []
        self.settled = True
        bases = [*self.token_bases, *([self.deployment_token_base] if self.deployment_token_base else [])]
        if not bases:
            return []
        actual = usage.prompt_tokens + usage.completion_tokens  # zero: no answer, the input is given back
        delta = actual - self.tokens
        if delta == 0:
            return []
        at = now_ms()
        if self.local:
            settle_locally(bases, delta, at)
            return []
        return settle_increments(bases, delta, at)


def _deployment_limits(candidates: Sequence[DeploymentInfo]) -> list[DeploymentLimits]:
    """The candidates' limits up to the first one without any (it always has headroom)."""
    limits = []
    for d in candidates:
        limits.append(DeploymentLimits(d.id, d.rpm_limit, d.tpm_limit))
        if d.rpm_limit is None and d.tpm_limit is None:
            break
    return limits if any(d.limited for d in limits) else []


def _needs_tokens(limits: Sequence[Limit], deployments: Sequence[DeploymentLimits]) -> bool:
    return any(limit.kind == TOKENS for limit in limits) or any(d.tpm is not None for d in deployments)


def _refused(state: LimitState, wait: int, check: RateCheck) -> RateLimited:
    limit = state.limit
    owner = f"API key '{limit.name}'" if limit.scope == "key" else f"team '{limit.name}'"
    too_large = state.amount > limit.limit
    seconds = max(1, math.ceil(wait / 1000))
    headers = check.headers(admitted=False)
    if too_large:
        message = (
            f"Request too large for the {_KIND_WORDS[limit.kind]} limit of {owner}: Limit {limit.limit}, "
            f"Requested {state.amount}. Send a shorter request."
        )
        headers["x-should-retry"] = "false"
    else:
        message = (
            f"Rate limit reached for {_KIND_WORDS[limit.kind]} on {owner}: Limit {limit.limit}, Used {state.used}, "
            f"Requested {state.amount}. Please try again in {format_duration(wait)}."
        )
        headers["retry-after"] = str(seconds)
        headers["retry-after-ms"] = str(max(1, wait))
    suffix = "requests" if limit.kind == REQUESTS else "tokens"
    headers[f"x-ratelimit-reset-{suffix}"] = format_duration(wait)
    return RateLimited(message, code="rate_limit_exceeded", headers=headers)


def _all_busy(wait: int, rate: RateCheck | None) -> RateLimited:
    headers = rate.headers(admitted=False) if rate is not None else {}
    headers["retry-after"] = str(max(1, math.ceil(wait / 1000)))
    headers["retry-after-ms"] = str(max(1, wait))
    return RateLimited(
        "Every deployment of this model is at its provider rate limit right now. "
        f"Please try again in {format_duration(wait)}.",
        code="deployments_at_capacity",
        headers=headers,
    )


def admit(route: RouteRequest, candidates: Sequence[DeploymentInfo]) -> Admission:
    """Check the limits, reserve the budget, pick the first candidate with headroom.

    Raises ``RateLimited`` (429 with Retry-After and OpenAI's headers), ``BudgetExceeded``.
    """
    key: KeyInfo = route.key
    limits = client_limits(key) if key.has_rate_limits else []
    deployments = _deployment_limits(candidates)
    plan = budgets.reservation_plan(key, route) if budgets.needs_reservation(key) else None
    if not limits and not deployments and plan is None:
        return Admission()
    tokens = route.input_tokens()[0] if _needs_tokens(limits, deployments) else 0
    amounts = [1 if limit.kind == REQUESTS else tokens for limit in limits]
    admission = Admission(tokens=tokens, token_bases=[limit.base for limit in limits if limit.kind == TOKENS])
    client = get_redis()
    if client is not None:
        try:
            return _admit_redis(client, route, admission, limits, amounts, deployments, plan)
        except budgets.REDIS_DOWN:
            logger.warning("rate limit counters unreachable; limiting in this process", exc_info=True)
            if plan is not None:
                admission.reservation = budgets.reserve_during_outage(key, plan)
                plan = None
    admission.local = True
    return _admit_local(route, admission, limits, amounts, deployments, plan)


def _admit_redis(
    client: object,
    route: RouteRequest,
    admission: Admission,
    limits: list[Limit],
    amounts: list[int],
    deployments: list[DeploymentLimits],
    plan: budgets.BudgetPlan | None,
) -> Admission:
    at = now_ms()
    budget_keys, budget_args = (
        budgets.budget_script_part(plan.budgets, plan.counters, plan.pico) if plan is not None else ([], [0, 0, 0])
    )
    call = script_call(
        budget_keys=budget_keys,
        budget_args=budget_args,
        limits=limits,
        amounts=amounts,
        deployments=deployments,
        tokens=admission.tokens,
        now_ms=at,
    )
    reply = budgets.run_admission_script(
        client,
        call.keys,
        call.args,
        plan.budgets if plan else [],
        plan.counters if plan else [],
        plan.at if plan else None,  # type: ignore[arg-type]  # read only with budgets, and there are none
        run=lambda: batcher().run(call),
    )
    status, index, wait = reply[0], reply[1], reply[2]
    states = [LimitState(limit, reply[3 + i], amounts[i]) for i, limit in enumerate(limits)]
    admission.rate = RateCheck(states, reset_ms(at)) if limits else None
    if status == 1:
        raise _refused(states[index - 1], wait, RateCheck(states, wait))
    if plan is not None:
        admission.reservation = budgets.Reservation(
            key=route.key, amount=plan.amount, amount_pico=plan.pico, counters=plan.counters
        )
    if status == 3:  # the script wrote nothing
        raise _all_busy(wait, admission.rate)
    _choose(admission, route, deployments, index)
    return admission


def _choose(admission: Admission, route: RouteRequest, deployments: list[DeploymentLimits], index: int) -> None:
    if not deployments:
        admission.chosen = 0
        return
    admission.chosen = index - 1
    chosen = deployments[index - 1]
    admission.deployment_token_base = f"{SLOT}:rl:deployment:{chosen.deployment_id}:{TOKENS}" if chosen.tpm else None


def _admit_local(
    route: RouteRequest,
    admission: Admission,
    limits: list[Limit],
    amounts: list[int],
    deployments: list[DeploymentLimits],
    plan: budgets.BudgetPlan | None,
) -> Admission:
    at = now_ms()
    with budgets._local_lock, local_windows.lock:
        states = []
        refused: tuple[LimitState, int] | None = None
        for limit, amount in zip(limits, amounts, strict=True):
            used, counts, first = local_windows.window(limit.base, at)
            state = LimitState(limit, used, amount)
            states.append(state)
            if refused is None and used + amount > limit.limit:
                refused = (state, wait_ms(counts, first, used, amount, limit.limit, at))
        admission.rate = RateCheck(states, reset_ms(at)) if limits else None
        if refused is not None:
            raise _refused(refused[0], refused[1], RateCheck(states, refused[1]))
        if plan is not None:
            budgets.reserve_local_locked(plan.budgets, plan.counters, plan.pico, plan.at)
        index, wait = _local_pick(deployments, admission.tokens, at)
        if index is None:
            if plan is not None:  # give the hold back: nothing is written when no deployment can take it
                from usage.recorder import local_counters

                for c in plan.counters:
                    local_counters.incr(c.hold, -plan.pico)
            raise _all_busy(wait, admission.rate)
        for limit, amount in zip(limits, amounts, strict=True):
            local_windows.add(limit.base, amount, at)
        _local_take(deployments, index, admission.tokens, at)
    if plan is not None:
        admission.reservation = budgets.Reservation(
            key=route.key, amount=plan.amount, amount_pico=plan.pico, counters=plan.counters
        )
    _choose(admission, route, deployments, index)
    return admission


def _local_pick(deployments: Sequence[DeploymentLimits], tokens: int, at: int) -> tuple[int | None, int]:
    """1-based index of the first deployment with headroom (0 when there are none to check)."""
    if not deployments:
        return 0, 0
    best = -1
    for i, d in enumerate(deployments, start=1):
        worst = 0
        for kind, limit, need in ((REQUESTS, d.rpm, 1), (TOKENS, d.tpm, tokens)):
            if limit is None:
                continue
            used, counts, first = local_windows.window(f"{SLOT}:rl:deployment:{d.deployment_id}:{kind}", at)
            if used + need > limit:
                worst = max(worst, wait_ms(counts, first, used, need, limit, at) or 1)
        if worst == 0:
            return i, 0
        best = worst if best < 0 else min(best, worst)
    return None, best


def _local_take(deployments: Sequence[DeploymentLimits], index: int, tokens: int, at: int) -> None:
    if not index:
        return
    d = deployments[index - 1]
    if d.rpm is not None:
        local_windows.add(f"{SLOT}:rl:deployment:{d.deployment_id}:{REQUESTS}", 1, at)
    if d.tpm is not None:
        local_windows.add(f"{SLOT}:rl:deployment:{d.deployment_id}:{TOKENS}", tokens, at)


def next_candidate(
    admission: Admission, route: RouteRequest, candidates: Sequence[DeploymentInfo], start: int
) -> int | None:
    """After a failed attempt: the index of the next candidate with headroom, counted against its
    limits; None when no later candidate has any. The deployment tried before keeps its charge."""
    rest = candidates[start:]
    if not rest:
        return None
    deployments = _deployment_limits(rest)
    if not deployments:
        return start
    if _needs_tokens([], deployments) and not admission.tokens:
        admission.tokens = route.input_tokens()[0]
    tokens = admission.tokens
    at = now_ms()
    client = get_redis()
    if client is not None and not admission.local:
        call = script_call(deployments=deployments, tokens=tokens, now_ms=at)
        try:
            reply = budgets.run_admission_script(client, call.keys, call.args, [], [], None)  # type: ignore[arg-type]  # no budgets: no time
        except budgets.REDIS_DOWN:
            return start
        if reply[0] != 0:
            return None
        index = reply[1]
    else:
        with local_windows.lock:
            picked, _ = _local_pick(deployments, tokens, at)
            if picked is None:
                return None
            _local_take(deployments, picked, tokens, at)
            index = picked
    chosen = deployments[index - 1]
    admission.deployment_token_base = f"{SLOT}:rl:deployment:{chosen.deployment_id}:{TOKENS}" if chosen.tpm else None
    return start + index - 1
