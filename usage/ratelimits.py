"""Rate limits: requests and tokens per minute, per client key, per team, per deployment.

The window is a sliding minute cut into 60 buckets of one second: a limit holds over the
last 60 whole buckets (the current one included), so it is exact to one second and, unlike
a fixed per-minute window, a burst across a minute boundary gets no second allowance. Each
bucket is one Redis integer (``{gw}:rl:<scope>:<id>:<r|t>:<bucket>``) that expires two
windows after it was last written.

Admission is one Lua script, in one round trip, together with the budget reservation
(usage/budgets.py): it reads the windows of every client limit, the budgets, and the
deployments' limits in ranking order; it refuses (client limit, budget) or picks the first
candidate deployment with headroom, and only then adds the request to every counter. So
concurrent requests on every process see one another exactly: at a 300 RPM limit, 300
requests pass, not one more.

Tokens: a request is charged its input (the gateway's count) when it is admitted; when it
ends, the difference to the real usage (prompt plus completion tokens) is added to the
bucket of that moment, in the usage event's pipeline (no extra round trip). A stream is
charged its input when it starts and its output when it ends; a failed request (no answer)
gives its input back. The request counters count every admitted request.

Embedded default (no Redis): the same windows in process, under one lock. While Redis
cannot be reached, each process applies the limits on its own (so the whole gateway may
admit up to one limit per process) and budgets follow their outage policy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

from accounts.keycache import KeyInfo
from gatewaysite.clock import clock
from gatewaysite.redis import SLOT
from usage.events import CounterIncrement

BUCKETS = 60
REQUESTS = "r"
TOKENS = "t"


def window_ms() -> int:
    """The window's length in ms: 60 s in production; tests shorten it to see a reset quickly."""
    return int(float(settings.GATEWAY["RATE_LIMIT_WINDOW_SECONDS"]) * 1000)


def bucket_ms() -> int:
    return max(1, window_ms() // BUCKETS)


def counter_ttl_seconds() -> int:
    return max(2, math.ceil(2 * BUCKETS * bucket_ms() / 1000))


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit on one counter: ``base`` names the counter family, ``kind`` is requests or tokens."""

    scope: str  # "key", "team", "deployment"
    name: str
    base: str
    kind: str
    limit: int


def client_limits(key: KeyInfo) -> list[Limit]:
    limits = []
    for scope, scope_id, name, rpm, tpm in (
        ("key", key.id, key.name, key.rpm_limit, key.tpm_limit),
        ("team", key.team_id, key.team, key.team_rpm_limit, key.team_tpm_limit),
    ):
        if scope_id is None:
            continue
        if rpm is not None:
            limits.append(Limit(scope, name, f"{SLOT}:rl:{scope}:{scope_id}:{REQUESTS}", REQUESTS, rpm))
        if tpm is not None:
            limits.append(Limit(scope, name, f"{SLOT}:rl:{scope}:{scope_id}:{TOKENS}", TOKENS, tpm))
    return limits


def deployment_limits(deployment_id: int, rpm: int | None, tpm: int | None) -> tuple[Limit | None, Limit | None]:
    base = f"{SLOT}:rl:deployment:{deployment_id}"
    return (
        Limit("deployment", str(deployment_id), f"{base}:{REQUESTS}", REQUESTS, rpm) if rpm is not None else None,
        Limit("deployment", str(deployment_id), f"{base}:{TOKENS}", TOKENS, tpm) if tpm is not None else None,
    )


# --- OpenAI's headers -------------------------------------------------------------------


def format_duration(ms: int) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``17.5s``, ``6m0s``, ``1h0m0s``."""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    minutes, rest = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s" if hours else f"{minutes}m{rest}s"


@dataclass(slots=True)
class LimitState:
    limit: Limit
    used: int  # in the window, before this request
    amount: int  # what this request adds


@dataclass
class RateCheck:
    """The client limits as one request found them; gives the response headers."""

    states: list[LimitState] = field(default_factory=list)
    reset_ms: int = 0

    def headers(self, *, admitted: bool) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, suffix in ((REQUESTS, "requests"), (TOKENS, "tokens")):
            tightest: tuple[int, LimitState] | None = None
            for state in self.states:
                if state.limit.kind != kind:
                    continue
                remaining = state.limit.limit - state.used - (state.amount if admitted else 0)
                if tightest is None or remaining < tightest[0]:
                    tightest = (remaining, state)
            if tightest is None:
                continue
            headers[f"x-ratelimit-limit-{suffix}"] = str(tightest[1].limit.limit)
            headers[f"x-ratelimit-remaining-{suffix}"] = str(max(0, tightest[0]))
            headers[f"x-ratelimit-reset-{suffix}"] = format_duration(self.reset_ms)
        return headers


# --- the script -------------------------------------------------------------------------

# KEYS: 4 per budget (spent, seeded, hold, previous hold), then one counter base per client
#       limit, then two per candidate deployment (requests, tokens).
# ARGV: nb, budget amount, hold ttl, nb budget limits; then nc, nd, now_ms, bucket_ms, ttl_ms,
#       tokens; then (limit, amount) per client limit; then (rpm, tpm) per deployment (-1: none).
# Returns {status, index, wait_ms, used per client limit...}; status 0 admitted (index: the
# deployment chosen, 0 when none were given), 1 client limit refused, 2 budget refused,
# 3 no deployment has headroom, -i budget i needs seeding. Nothing is written unless admitted.
# Bucket counter names are built here from their base: one Redis instance, not a cluster.
ADMIT_SCRIPT = """
local nb = tonumber(ARGV[1])
local p = 4 + nb
local nc = tonumber(ARGV[p])
local nd = tonumber(ARGV[p + 1])
local now = tonumber(ARGV[p + 2])
local width = tonumber(ARGV[p + 3])
local ttl = tonumber(ARGV[p + 4])
local tokens = tonumber(ARGV[p + 5])
local q = p + 6
local cur = math.floor(now / width)
local first = cur - 59

-- Each counter keeps a running sum of its window (base:sum) and the oldest bucket still in
-- it (base:tail): buckets that left the window are subtracted once, so a check reads a few
-- keys instead of 60. When the sum is missing or stale beyond a window, it is recomputed.
local function counts(base)
  local names = {}
  for j = 0, 59 do names[j + 1] = base .. ':' .. (first + j) end
  local values = redis.call('MGET', unpack(names))
  local out = {}
  local used = 0
  for j = 1, 60 do
    local v = tonumber(values[j]) or 0
    out[j] = v
    used = used + v
  end
  return used, out
end

local function used_of(base)
  local tail = tonumber(redis.call('GET', base .. ':tail') or '')
  local sum
  if tail == nil or first - tail > 60 then
    sum = counts(base)
  else
    sum = tonumber(redis.call('GET', base .. ':sum') or '0')
    for b = tail, first - 1 do
      sum = sum - (tonumber(redis.call('GET', base .. ':' .. b) or '0'))
    end
  end
  if tail == nil or tail < first then
    redis.call('SET', base .. ':sum', sum, 'PX', ttl)
    redis.call('SET', base .. ':tail', first, 'PX', ttl)
  end
  return sum
end

local function wait_for(base, used, need, limit)
  local _, c = counts(base)
  local freed = 0
  for j = 1, 60 do
    freed = freed + c[j]
    if used - freed + need <= limit then return (first + j - 1 + 60) * width - now end
  end
  return 60 * width
end

local res = {0, 0, 0}
local refused = 0
local wait = 0
for i = 1, nc do
  local limit = tonumber(ARGV[q + 2 * (i - 1)])
  local amount = tonumber(ARGV[q + 2 * (i - 1) + 1])
  local used = used_of(KEYS[4 * nb + i])
  res[3 + i] = used
  if refused == 0 and used + amount > limit then
    refused = i
    wait = wait_for(KEYS[4 * nb + i], used, amount, limit)
  end
end
if refused > 0 then
  res[1] = 1; res[2] = refused; res[3] = wait
  return res
end

local amount = tonumber(ARGV[2])
for i = 1, nb do
  local base = (i - 1) * 4
  if redis.call('EXISTS', KEYS[base + 2]) == 0 then res[1] = -i; return res end
  local spent = tonumber(redis.call('GET', KEYS[base + 1]) or '0')
  local held = math.max(0, tonumber(redis.call('GET', KEYS[base + 3]) or '0'))
    + math.max(0, tonumber(redis.call('GET', KEYS[base + 4]) or '0'))
  if spent + held + amount > tonumber(ARGV[3 + i]) then res[1] = 2; res[2] = i; return res end
end

local r = q + 2 * nc
local dk = 4 * nb + nc
local chosen = 0
local best = -1
for d = 1, nd do
  local ok = true
  local w = 0
  for k = 0, 1 do
    local limit = tonumber(ARGV[r + 2 * (d - 1) + k])
    if limit >= 0 then
      local need = 1
      if k == 1 then need = tokens end
      local base = KEYS[dk + 2 * (d - 1) + k + 1]
      local used = used_of(base)
      if used + need > limit then
        ok = false
        w = math.max(w, wait_for(base, used, need, limit))
      end
    end
  end
  if ok then chosen = d; break end
  if best < 0 or w < best then best = w end
end
if nd > 0 and chosen == 0 then res[1] = 3; res[3] = best; return res end

local function add(base, n)
  local name = base .. ':' .. cur
  redis.call('INCRBY', name, n)
  redis.call('PEXPIRE', name, ttl)
  redis.call('INCRBY', base .. ':sum', n)
  redis.call('PEXPIRE', base .. ':sum', ttl)
end
for i = 1, nc do add(KEYS[4 * nb + i], tonumber(ARGV[q + 2 * (i - 1) + 1])) end
for i = 1, nb do
  local hold = KEYS[(i - 1) * 4 + 3]
  redis.call('INCRBY', hold, ARGV[2])
  redis.call('EXPIRE', hold, ARGV[3])
end
if chosen > 0 then
  if tonumber(ARGV[r + 2 * (chosen - 1)]) >= 0 then add(KEYS[dk + 2 * (chosen - 1) + 1], 1) end
  if tonumber(ARGV[r + 2 * (chosen - 1) + 1]) >= 0 then add(KEYS[dk + 2 * (chosen - 1) + 2], tokens) end
end
res[2] = chosen
return res
"""


@dataclass(frozen=True, slots=True)
class DeploymentLimits:
    deployment_id: int
    rpm: int | None
    tpm: int | None

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None


@dataclass
class ScriptCall:
    keys: list[str]
    args: list[int | str]
    n_client: int


def script_call(
    *,
    budget_keys: Sequence[str] = (),
    budget_args: Sequence[int] = (0, 0, 0),
    limits: Sequence[Limit] = (),
    amounts: Sequence[int] = (),
    deployments: Sequence[DeploymentLimits] = (),
    tokens: int = 0,
    now_ms: int,
) -> ScriptCall:
    """KEYS and ARGV of ``ADMIT_SCRIPT``; ``budget_args`` is (nb, amount, hold ttl, limits...)."""
    keys = [*budget_keys, *(limit.base for limit in limits)]
    args: list[int | str] = [
        *budget_args,
        len(limits),
        len(deployments),
        now_ms,
        bucket_ms(),
        counter_ttl_seconds() * 1000,
        tokens,
    ]
    for limit, amount in zip(limits, amounts, strict=True):
        args += [limit.limit, amount]
    for d in deployments:
        keys += [
            f"{SLOT}:rl:deployment:{d.deployment_id}:{REQUESTS}",
            f"{SLOT}:rl:deployment:{d.deployment_id}:{TOKENS}",
        ]
        args += [d.rpm if d.rpm is not None else -1, d.tpm if d.tpm is not None else -1]
    return ScriptCall(keys=keys, args=args, n_client=len(limits))


# --- in process (embedded default, and each process while Redis is down) -----------------


class LocalWindows:
    """The same sliding windows in process, for one process that is the whole gateway."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._counts: dict[str, dict[int, int]] = {}

    def window(self, base: str, now_ms: int) -> tuple[int, list[int], int]:
        """(used, counts oldest first, first bucket) over the window ending at ``now_ms``."""
        width = bucket_ms()
        cur = now_ms // width
        first = cur - BUCKETS + 1
        buckets = self._counts.get(base)
        if not buckets:
            return 0, [0] * BUCKETS, first
        for old in [b for b in buckets if b < first]:
            del buckets[old]
        counts = [buckets.get(first + j, 0) for j in range(BUCKETS)]
        return sum(counts), counts, first

    def add(self, base: str, amount: int, now_ms: int) -> None:
        buckets = self._counts.setdefault(base, {})
        cur = now_ms // bucket_ms()
        buckets[cur] = buckets.get(cur, 0) + amount
        if len(self._counts) > 100_000:  # bound memory: drop idle windows
            for name in [n for n, b in self._counts.items() if not b]:
                del self._counts[name]

    def clear(self) -> None:
        with self.lock:
            self._counts.clear()


local_windows = LocalWindows()


def wait_ms(counts: list[int], first: int, used: int, need: int, limit: int, now_ms: int) -> int:
    width = bucket_ms()
    freed = 0
    for j, count in enumerate(counts):
        freed += count
        if used - freed + need <= limit:
            return (first + j + BUCKETS) * width - now_ms
    return BUCKETS * width


def now_ms() -> int:
    return int(clock.time() * 1000)


def reset_ms(now: int) -> int:
    """Until a counter written now has left the window."""
    width = bucket_ms()
    return (now // width + BUCKETS) * width - now


def settle_increments(bases: Sequence[str], delta: int, at_ms: int) -> list[CounterIncrement]:
    """Counter increments that add ``delta`` tokens to each base's bucket of ``at_ms`` and to its
    running sum (Redis); the sum drops the bucket again when it leaves the window."""
    bucket = at_ms // bucket_ms()
    ttl = counter_ttl_seconds()
    increments = []
    for base in bases:
        increments += [CounterIncrement(f"{base}:{bucket}", delta, ttl), CounterIncrement(f"{base}:sum", delta, ttl)]
    return increments


def settle_locally(bases: Sequence[str], delta: int, at_ms: int) -> None:
    with local_windows.lock:
        for base in bases:
            local_windows.add(base, delta, at_ms)


def deployment_headroom(
    deployments: Sequence[DeploymentLimits], tokens: int
) -> dict[int, dict[str, int | bool | None]]:
    """Per deployment id: its limits, what is left of them now, and whether this request
    (one request, ``tokens`` input tokens) would be skipped. Reads only (explain)."""
    from gatewaysite.redis import get_redis

    at = now_ms()
    width = bucket_ms()
    first = at // width - BUCKETS + 1
    wanted = [
        (d, kind, limit)
        for d in deployments
        for kind, limit in ((REQUESTS, d.rpm), (TOKENS, d.tpm))
        if limit is not None
    ]
    used: list[int] = []
    client = get_redis()
    if client is not None:
        try:
            pipe = client.pipeline(transaction=False)
            for d, kind, _ in wanted:
                base = f"{SLOT}:rl:deployment:{d.deployment_id}:{kind}"
                pipe.mget([f"{base}:{first + j}" for j in range(BUCKETS)])
            used = [sum(int(v or 0) for v in values) for values in pipe.execute()]
        except Exception:  # noqa: BLE001 - explain shows unknown headroom rather than failing
            used = []
    else:
        with local_windows.lock:
            used = [local_windows.window(f"{SLOT}:rl:deployment:{d.deployment_id}:{k}", at)[0] for d, k, _ in wanted]
    result: dict[int, dict[str, int | bool | None]] = {
        d.deployment_id: {
            "rpm_limit": d.rpm,
            "tpm_limit": d.tpm,
            "requests_remaining": None,
            "tokens_remaining": None,
            "at_limit": False,
        }
        for d in deployments
    }
    for (d, kind, limit), count in zip(wanted, used, strict=False):
        entry = result[d.deployment_id]
        remaining = max(0, limit - count)
        entry["requests_remaining" if kind == REQUESTS else "tokens_remaining"] = remaining
        if remaining < (1 if kind == REQUESTS else max(1, tokens)):
            entry["at_limit"] = True
    return result
