"""Spend counters and budgets.

A key or a team may have a budget: USD per UTC day or per UTC month. Before a budgeted
request goes upstream, ``reserve`` holds its *maximum* cost against every budget that
applies: the input estimate plus the most output the request can get - its
``max_completion_tokens`` / ``max_tokens``, else the deployment's ``max_output_tokens``,
else its context window minus the input - at the price of the most expensive of the
model's deployments. A request without ``max_tokens`` to a deployment whose output limit
is unknown is refused (400 ``max_tokens_required``): its cost has no bound, and a budget
holds only if every admitted request's cost does. It is refused (``BudgetExceeded``, 429)
when ``spent + held + this request`` would pass a budget. The check-and-hold is atomic:
a Lua script in Redis, a lock in the embedded mode. So spend passes a budget by at most
one request's cost, whatever the client leaves out.

When Redis cannot be reached, each budget's ``budget_when_redis_down`` decides: ``closed``
(the default) refuses with 503 ``budget_unavailable``; ``open`` admits requests against an
allowance local to the process: ``GATEWAY_BUDGET_OUTAGE_SHARE`` of the budget per budget
period, consumed at each request's maximum cost and never given back. If any budget of the
request fails closed, the request is refused.

After the request, ``settle_counters`` returns the counter increments that go into the
recorder's pipeline together with the usage event: the actual cost is added to the
period's spend and the hold is released, in the same round trip.

Counters are integer pico-dollars (``usage/cost.py``), so increments are exact:
- ``{gw}:spend:key:<id>``: the key's spend since it was issued (``x-gateway-key-spend-usd``);
- ``{gw}:budget:<key|team>:<id>:<period>``: spend of one budget period (``2026-11-26``, ``2026-11``);
- ``...:<period>:hold:<slot>``: cost held by requests in flight, in 10-minute slots. A
  reservation checks the current and the previous slot, so the hold of a request that
  dies without settling (a killed process) lapses within 20 minutes.

After a Redis restart (counters missing) a counter is seeded from the sum of the usage
records in Postgres: for budgets in ``reserve`` (the script reports the missing seed
marker), for the key's total lazily once a minute per key per process. Unknown costs
(no price) add nothing to any counter; see docs/cost.md for how budgets treat them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings

from accounts.keycache import KeyInfo
from gatewaysite.api.errors import BudgetExceeded, BudgetUnavailable, InvalidRequest
from gatewaysite.clock import now
from gatewaysite.redis import SLOT, get_redis
from usage.events import CounterIncrement

if TYPE_CHECKING:
    from routing.config.snapshot import DeploymentInfo
    from routing.strategies.base import RouteRequest

logger = logging.getLogger(__name__)

HOLD_SLOT_SECONDS = 600
HOLD_TTL_SECONDS = 3 * HOLD_SLOT_SECONDS
KEY_SPEND_RECHECK_SECONDS = 60.0

_SEED = """
if redis.call('SET', KEYS[2], '1', 'NX') then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  if tonumber(ARGV[2]) > 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    redis.call('EXPIRE', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
"""


_scripts: dict[int, tuple[Any, Any]] = {}


def _script(client: Any, which: int) -> Any:
    """The registered (admission, seed) scripts of this client: EVALSHA, loaded once.

    Budgets are reserved by the admission script of usage/ratelimits.py, which checks the
    rate limits in the same call: one round trip for both.
    """
    from usage.ratelimits import ADMIT_SCRIPT

    pair = _scripts.get(id(client))
    if pair is None:
        pair = (client.register_script(ADMIT_SCRIPT), client.register_script(_SEED))
        _scripts[id(client)] = pair
    return pair[which]


def key_spend_counter(key_id: int) -> str:
    return f"{SLOT}:spend:key:{key_id}"


# --- periods --------------------------------------------------------------------------


def period_bounds(period: str, at: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the UTC day or month containing ``at``."""
    at = at.astimezone(UTC)
    if period == "day":
        start = datetime(at.year, at.month, at.day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    end = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def period_id(period: str, at: datetime) -> str:
    at = at.astimezone(UTC)
    return f"{at:%Y-%m-%d}" if period == "day" else f"{at:%Y-%m}"


@dataclass(frozen=True)
class Budget:
    """One budget that applies to a request: the key's own or its team's."""

    scope: str  # "key" or "team"
    scope_id: int
    name: str
    limit_usd: Decimal
    period: str  # "day" or "month"
    when_redis_down: str = "closed"  # or "open"

    def counters(self, at: datetime) -> BudgetCounters:
        pid = period_id(self.period, at)
        base = f"{SLOT}:budget:{self.scope}:{self.scope_id}:{pid}"
        slot = int(at.timestamp()) // HOLD_SLOT_SECONDS
        _, end = period_bounds(self.period, at)
        ttl = int((end - at).total_seconds()) + 86_400  # every counter of the period ends a day after it
        return BudgetCounters(
            spent=base,
            seeded=base + ":seeded",
            hold=f"{base}:hold:{slot}",
            previous_hold=f"{base}:hold:{slot - 1}",
            ttl=max(ttl, 60),
        )


@dataclass(frozen=True)
class BudgetCounters:
    spent: str
    seeded: str
    hold: str
    previous_hold: str
    ttl: int


def budgets_for(key: KeyInfo) -> list[Budget]:
    budgets = []
    if key.budget_usd is not None:
        budgets.append(
            Budget("key", key.id, key.name, key.budget_usd, key.budget_period or "month", key.budget_when_redis_down)
        )
    if key.team_budget_usd is not None and key.team_id is not None:
        budgets.append(
            Budget(
                "team",
                key.team_id,
                key.team,
                key.team_budget_usd,
                key.team_budget_period or "month",
                key.team_budget_when_redis_down,
            )
        )
    return budgets


def needs_reservation(key: KeyInfo) -> bool:
    return key.budget_usd is not None or key.team_budget_usd is not None


# --- the amount held -------------------------------------------------------------------


def _client_max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def max_output_tokens(deployment: DeploymentInfo, input_tokens: int, requested: int | None) -> int | None:
    """The most output tokens a request can get from ``deployment``; None: no bound is known.

    The client's ``max_tokens`` when it sent one (capped by the deployment's limit), else
    the deployment's ``max_output_tokens``, else its context window minus the input.
    """
    limit = deployment.max_output_tokens
    if limit is None and deployment.context_window is not None:
        limit = max(1, deployment.context_window - input_tokens)
    if requested is not None:
        return min(requested, limit) if limit is not None else requested
    return limit


def max_request_cost(route: RouteRequest, at: datetime) -> Decimal | None:
    """The most this request can cost on any of its model's deployments; None: none is priced.

    Raises ``InvalidRequest`` (400 ``max_tokens_required``) when the request sets no
    ``max_tokens`` and a priced deployment's output limit is unknown.
    """
    from usage.cost import estimate_cost

    input_tokens, _ = route.input_tokens()
    requested = _client_max_tokens(route.body)
    costs = []
    for deployment in route.snapshot.deployments_for(route.model):
        price = route.snapshot.price_for(deployment, at)
        if price is None:
            continue
        # Embeddings produce no output tokens.
        output_tokens = 0 if route.endpoint == "embeddings" else max_output_tokens(deployment, input_tokens, requested)
        if output_tokens is None:
            raise InvalidRequest(
                f"This key has a budget, and the output of model '{route.model}' on deployment "
                f"'{deployment.name}' has no known limit, so the most this request could cost is unknown. "
                "Set max_tokens (or max_completion_tokens), or ask an operator to set the deployment's "
                "max_output_tokens or context_window.",
                code="max_tokens_required",
                param="max_tokens",
            )
        costs.append(estimate_cost(input_tokens, output_tokens, price))
    return max(costs) if costs else None


# --- reservations ----------------------------------------------------------------------


@dataclass
class Reservation:
    key: KeyInfo
    amount: Decimal
    amount_pico: int = 0
    counters: list[BudgetCounters] = field(default_factory=list)
    released: bool = False
    held: bool = True  # False: admitted on the local outage allowance, nothing held in Redis


def _db_spent(budget: Budget, at: datetime) -> Decimal:
    from django.db.models import Sum

    from usage.models import UsageRecord

    start, end = period_bounds(budget.period, at)
    records = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
    if budget.scope == "key":
        records = records.filter(client_key_id=budget.scope_id)
    else:
        records = records.filter(client_key__team_id=budget.scope_id)
    return records.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)


def _refuse(budget: Budget, amount: Decimal, at: datetime) -> BudgetExceeded:
    from usage.cost import format_usd

    _, end = period_bounds(budget.period, at)
    period = "daily" if budget.period == "day" else "monthly"
    owner = _owner(budget)
    return BudgetExceeded(
        f"Budget exceeded: the {period} budget of {owner} is ${format_usd(budget.limit_usd)} and this request "
        f"could cost up to ${format_usd(amount)} more than is left. It resets at {end:%Y-%m-%dT%H:%MZ}.",
        code="budget_exceeded",
    )


_local_lock = threading.Lock()


def _reserve_local(budgets: list[Budget], counters: list[BudgetCounters], pico: int, at: datetime) -> None:
    with _local_lock:
        reserve_local_locked(budgets, counters, pico, at)


def reserve_local_locked(budgets: list[Budget], counters: list[BudgetCounters], pico: int, at: datetime) -> None:
    """The embedded reservation; the caller holds ``_local_lock`` (usage/admission.py holds it
    across the rate limits too)."""
    from usage.cost import to_picodollars
    from usage.recorder import local_counters

    for budget, c in zip(budgets, counters, strict=True):
        if local_counters.get(c.seeded) is None:
            local_counters.set_if_missing(c.spent, to_picodollars(_db_spent(budget, at)))
            local_counters.set_if_missing(c.seeded, 1)
    for budget, c in zip(budgets, counters, strict=True):
        spent = local_counters.get(c.spent) or 0
        held = max(0, local_counters.get(c.hold) or 0) + max(0, local_counters.get(c.previous_hold) or 0)
        if spent + held + pico > to_picodollars(budget.limit_usd):
            raise _refuse(budget, from_pico(pico), at)
    for c in counters:
        local_counters.incr(c.hold, pico)


def from_pico(value: int) -> Decimal:
    from usage.cost import from_picodollars

    return from_picodollars(value)


def budget_script_part(budgets: list[Budget], counters: list[BudgetCounters], pico: int) -> tuple[list[str], list[int]]:
    """The budgets' KEYS and leading ARGV of the admission script."""
    from usage.cost import to_picodollars

    keys = [k for c in counters for k in (c.spent, c.seeded, c.hold, c.previous_hold)]
    return keys, [len(counters), pico, HOLD_TTL_SECONDS, *[to_picodollars(b.limit_usd) for b in budgets]]


def run_admission_script(
    client: Any,
    keys: list[str],
    args: list[Any],
    budgets: list[Budget],
    counters: list[BudgetCounters],
    at: datetime,
    *,
    run: Callable[[], list[Any]] | None = None,
) -> list[int]:
    """Run the admission script, seeding missing budget counters from Postgres; a budget it
    refuses raises ``BudgetExceeded``. Returns the script's reply (usage/ratelimits.py).

    ``run`` sends the script another way (usage/admission.py batches concurrent requests).
    """
    from usage.cost import to_picodollars

    script = _script(client, 0)
    send = run or (lambda: script(keys=keys, args=args))
    pico = int(args[1])
    for _ in range(len(budgets) + 2):
        reply = [int(v) for v in send()]
        status = reply[0]
        if status == 2:
            raise _refuse(budgets[reply[1] - 1], from_pico(pico), at)
        if status >= 0:
            return reply
        # A period counter is missing (new period, or Redis lost it): seed it from Postgres.
        budget, c = budgets[-status - 1], counters[-status - 1]
        _script(client, 1)(keys=[c.spent, c.seeded], args=[to_picodollars(_db_spent(budget, at)), c.ttl])
    raise RuntimeError("budget counters could not be seeded")


def _reserve_redis(client: Any, budgets: list[Budget], counters: list[BudgetCounters], pico: int, at: datetime) -> None:
    from usage.ratelimits import now_ms, script_call

    keys, budget_args = budget_script_part(budgets, counters, pico)
    call = script_call(budget_keys=keys, budget_args=budget_args, now_ms=now_ms())
    run_admission_script(client, call.keys, call.args, budgets, counters, at)


@dataclass
class BudgetPlan:
    """What a request would hold: its budgets, their counters, the amount."""

    budgets: list[Budget]
    counters: list[BudgetCounters]
    amount: Decimal
    pico: int
    at: datetime


def reservation_plan(key: KeyInfo, route: RouteRequest) -> BudgetPlan | None:
    """The budgets that apply to the request and its maximum cost; None: no budget applies."""
    from usage.cost import to_picodollars

    budgets = budgets_for(key)
    if not budgets:
        return None
    at = now()
    amount = max_request_cost(route, at)
    if amount is None:
        # Fail closed: a budget cannot be enforced on a request whose cost cannot be known.
        raise BudgetExceeded(
            f"The model '{route.model}' has no price configured, so a request cannot be checked against the "
            "budget of this key or its team. Ask an operator to add a pricing row.",
            code="budget_unpriced_model",
        )
    return BudgetPlan(budgets, [b.counters(at) for b in budgets], amount, to_picodollars(amount), at)


def reserve(key: KeyInfo, route: RouteRequest) -> Reservation | None:
    """Hold the request's estimated maximum cost against the key's and team's budgets.

    The request path reserves through ``usage.admission.admit`` (budgets and rate limits in
    one round trip); this is the same reservation without rate limits.
    """
    plan = reservation_plan(key, route)
    if plan is None:
        return None
    client = get_redis()
    if client is None:
        _reserve_local(plan.budgets, plan.counters, plan.pico, plan.at)
    else:
        try:
            _reserve_redis(client, plan.budgets, plan.counters, plan.pico, plan.at)
        except REDIS_DOWN:
            return reserve_during_outage(key, plan)
    return Reservation(key=key, amount=plan.amount, amount_pico=plan.pico, counters=plan.counters)


def reserve_during_outage(key: KeyInfo, plan: BudgetPlan) -> Reservation:
    logger.warning("budget counters unreachable; applying the budgets' outage policy", exc_info=True)
    _reserve_during_outage(plan.budgets, plan.counters, plan.pico, plan.at)
    return Reservation(key=key, amount=plan.amount, amount_pico=plan.pico, counters=plan.counters, held=False)


# --- Redis unreachable -----------------------------------------------------------------

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

_outage_lock = threading.Lock()
_outage_used: dict[str, int] = {}  # budget period counter -> pico-dollars admitted by this process while Redis was down


def _reserve_during_outage(budgets: list[Budget], counters: list[BudgetCounters], pico: int, at: datetime) -> None:
    """Admit the request on this process's outage allowance, or refuse it (503 ``budget_unavailable``)."""
    from usage.cost import to_picodollars

    closed = [b for b in budgets if b.when_redis_down != "open"]
    if closed:
        raise BudgetUnavailable(
            f"The budget of {_owner(closed[0])} cannot be checked right now (its counters are unreachable), "
            "and it is set to refuse requests until they are back. Retry shortly.",
            code="budget_unavailable",
        )
    share = Decimal(str(settings.GATEWAY["BUDGET_OUTAGE_SHARE"]))
    with _outage_lock:
        for budget, c in zip(budgets, counters, strict=True):
            allowance = to_picodollars(budget.limit_usd * share)
            if _outage_used.get(c.spent, 0) + pico > allowance:
                raise BudgetUnavailable(
                    f"The budget of {_owner(budget)} cannot be checked right now (its counters are unreachable), "
                    "and this server's allowance for such outages is used up. Retry shortly.",
                    code="budget_unavailable",
                )
        for c in counters:
            _outage_used[c.spent] = _outage_used.get(c.spent, 0) + pico


def _owner(budget: Budget) -> str:
    return f"API key '{budget.name}'" if budget.scope == "key" else f"team '{budget.name}'"


def forget_outages() -> None:
    """Tests: give every budget its whole outage allowance back."""
    with _outage_lock:
        _outage_used.clear()


def release(reservation: Reservation | None) -> None:
    """Give back a hold now (the request failed); settling later adds only the actual cost."""
    if reservation is None or reservation.released:
        return
    reservation.released = True
    if not reservation.held:
        return
    client = get_redis()
    if client is None:
        from usage.recorder import local_counters

        for c in reservation.counters:
            local_counters.incr(c.hold, -reservation.amount_pico)
        return
    pipe = client.pipeline(transaction=False)
    for c in reservation.counters:
        pipe.decrby(c.hold, reservation.amount_pico)
    try:
        pipe.execute()
    except REDIS_DOWN:  # the hold lapses with its slot (HOLD_TTL_SECONDS)
        logger.warning("could not release a budget hold; it lapses within %s s", HOLD_TTL_SECONDS, exc_info=True)


# --- settling --------------------------------------------------------------------------

_key_spend_checked: dict[int, float] = {}


def _ensure_key_spend_seeded(key_id: int) -> None:
    """Seed ``{gw}:spend:key:<id>`` from Postgres if it is missing (new process, or Redis restarted).

    Checked once a minute per key per process: one EXISTS, and a query only when missing.
    """
    checked = _key_spend_checked.get(key_id)
    moment = time.monotonic()
    if checked is not None and moment - checked < KEY_SPEND_RECHECK_SECONDS:
        return
    _key_spend_checked[key_id] = moment
    from django.db.models import Sum

    from usage.cost import to_picodollars
    from usage.models import UsageRecord

    counter = key_spend_counter(key_id)
    marker = counter + ":seeded"
    client = get_redis()
    if client is None:
        from usage.recorder import local_counters

        if local_counters.get(marker) is None:
            total = UsageRecord.objects.filter(client_key_id=key_id).aggregate(t=Sum("cost_usd"))["t"] or 0
            local_counters.set_if_missing(counter, to_picodollars(Decimal(total)))
            local_counters.set_if_missing(marker, 1)
        return
    if client.exists(marker):
        return
    total = UsageRecord.objects.filter(client_key_id=key_id).aggregate(t=Sum("cost_usd"))["t"] or 0
    _script(client, 1)(keys=[counter, marker], args=[to_picodollars(Decimal(total)), 0])


def forget_seeding() -> None:
    """Tests: make the next request check the key spend counters again."""
    _key_spend_checked.clear()


def settle_counters(key: KeyInfo, reservation: Reservation | None, cost: Decimal | None) -> list[CounterIncrement]:
    """Counter increments for the usage event's round trip; the key's total spend comes first."""
    from usage.cost import to_picodollars

    try:
        _ensure_key_spend_seeded(key.id)
    except Exception:  # noqa: BLE001 - seeding is best effort; recording the request is not
        logger.warning("could not seed the spend counter of key %s; retrying later", key.id, exc_info=True)
        _key_spend_checked.pop(key.id, None)
    pico = to_picodollars(cost) if cost is not None else 0
    increments = [CounterIncrement(key_spend_counter(key.id), pico)]
    if reservation is not None:
        for c in reservation.counters:
            if pico:
                increments.append(CounterIncrement(c.spent, pico, c.ttl))
            if not reservation.released and reservation.held:
                increments.append(CounterIncrement(c.hold, -reservation.amount_pico, HOLD_TTL_SECONDS))
        reservation.released = True
    return increments
