"""Live latency per deployment for the latency strategy, shared across gateway processes.

The request path never waits on Redis for it:

- ``observe()`` (after each upstream attempt) adds to this process's per-second
  aggregates in memory: sum of microseconds and count of successful attempts, count of
  failed ones.
- A background thread (a greenlet under gunicorn's gevent worker), started lazily and
  again after a fork, syncs once a second in one pipeline: it adds this process's new
  aggregates to the shared per-second hashes ``gw:lat:{epoch_second}`` (fields
  ``s|{deployment}``, ``n|{deployment}``, ``e|{deployment}``, HINCRBY, with EXPIRE) and
  reads back what other processes may have changed since: the last ``RECENT_SECONDS``
  seconds (and any older second this process just pushed to), the whole window only
  every ``FULL_READ_EVERY`` syncs and after a failed one. Processes push a second within
  about a second of it, so older seconds are final; a process whose sync failed or
  stalled pushes late, and the others see that at their next whole read (at most
  ``FULL_READ_EVERY`` seconds later). Reading the whole 60-second window every second was
  60 HGETALLs per process per second, most of Redis' work for an idle process
  (docs/scaling.md, "How many processes one Redis and one Postgres carry").
- ``stats()`` combines the last view read back with what this process observed since,
  as a time-decayed mean: a second ``age`` seconds old weighs ``0.5 ** (age /
  half_life)``, seconds older than the window do not count. A failed attempt counts as
  ``LATENCY_ERROR_PENALTY_MS``, so a failing deployment looks slow.
- Each second also holds a log-spaced histogram (usage/latency/histogram.py) per kind
  of answer: fields ``h{bucket}|{deployment}`` for whole answers, ``t{bucket}|{deployment}``
  for streams' time to first token. ``quantiles()`` reads a percentile (the p95 of the
  ``cost-slo`` strategy and of hedging) from the *most recent* seconds that together
  hold at least ``recent`` samples, so it follows a change within the seconds those
  samples take, in both directions, instead of averaging the whole window; and the same
  percentile of the samples before those (``previous_ms``, a second apart), so a caller
  can tell a lasting change from a moment's stall.
- The same round trip carries other per-process live counts that registered with
  ``carry`` (the in-flight counts of ``least-busy``, routing/inflight.py).

So a deployment that slows down loses traffic within about a second on every process,
and one that was avoided drops out of the window, after which the strategy tries it
again (exploration) and it wins traffic back if it recovered.

Without Redis (embedded default) the same aggregates stay in this process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

from gatewaysite import clock as clock_module
from gatewaysite.env import GatewaySettings
from gatewaysite.redis_client import get_redis
from usage.latency.histogram import Histogram, bucket_of

logger = logging.getLogger(__name__)

KEY_PREFIX = "gw:lat:"
SYNC_INTERVAL_SECONDS = 1.0
RECENT_SECONDS = 5  # seconds read back at every sync: where the other processes' pushes land
FULL_READ_EVERY = 10  # syncs between reads of the whole window (late pushes)

# deployment -> epoch second -> [sum of successful microseconds, successes, failures, histogram counts]
# histogram counts: "h{bucket}" (whole answers) / "t{bucket}" (streams' first token) -> count
Buckets = dict[str, dict[int, list[Any]]]


@dataclass(frozen=True, slots=True)
class LiveStat:
    mean_ms: float
    samples: int
    errors: int


# Seconds left out between a percentile's two reads (``LiveQuantile.previous_ms``): one
# short stall - a CPU-starved process answering late on every request it has in flight -
# lands in one second, or two adjacent ones, so it can never be in both reads.
PREVIOUS_READ_GAP_SECONDS = 1


@dataclass(frozen=True, slots=True)
class LiveQuantile:
    """A percentile of the most recent samples of one deployment, and how many it rests on.

    ``previous_ms`` is the same percentile of the samples before those, from seconds at
    least ``PREVIOUS_READ_GAP_SECONDS`` older than the oldest second of the first read
    (as many samples again when the window has them): a figure that is high in both
    reads has been high for more than a moment (``cost-slo`` leaves a deployment only
    then). None when the window holds nothing older.
    """

    ms: float
    samples: int  # samples the percentile was read from (the newest seconds)
    window_samples: int  # samples in the whole window
    previous_ms: float | None = None
    previous_samples: int = 0  # samples the previous read rests on


def _new_bucket() -> list[Any]:
    return [0, 0, 0, {}]


def _merge(into: Buckets, other: Buckets) -> None:
    for deployment, seconds in other.items():
        target = into.setdefault(deployment, {})
        for second, (sum_us, ok, errors, hist) in seconds.items():
            bucket = target.get(second)
            if bucket is None:
                target[second] = [sum_us, ok, errors, dict(hist)]
            else:
                bucket[0] += sum_us
                bucket[1] += ok
                bucket[2] += errors
                counts = bucket[3]
                for name, count in hist.items():
                    counts[name] = counts.get(name, 0) + count


class _Totals:
    """Decayed sums of one deployment: weighted ms, weighted samples, raw samples, raw errors."""

    __slots__ = ("weighted_ms", "weight", "samples", "errors")

    def __init__(self) -> None:
        self.weighted_ms = 0.0
        self.weight = 0.0
        self.samples = 0
        self.errors = 0

    def copy(self) -> _Totals:
        other = _Totals()
        other.weighted_ms, other.weight, other.samples, other.errors = (
            self.weighted_ms,
            self.weight,
            self.samples,
            self.errors,
        )
        return other


def _accumulate(totals: dict[str, _Totals], buckets: Buckets, now_second: int, conf: GatewaySettings) -> None:
    window = conf["LATENCY_WINDOW_SECONDS"]
    half_life = conf["LATENCY_HALF_LIFE_SECONDS"]
    penalty = conf["LATENCY_ERROR_PENALTY_MS"]
    for deployment, seconds in buckets.items():
        entry = totals.get(deployment)
        for second, (sum_us, ok, errors, _) in seconds.items():
            age = now_second - second
            if age >= window:
                continue
            if entry is None:
                entry = totals[deployment] = _Totals()
            weight = 0.5 ** (max(age, 0) / half_life)
            entry.weighted_ms += weight * (sum_us / 1000 + errors * penalty)
            entry.weight += weight * (ok + errors)
            entry.samples += ok + errors
            entry.errors += errors


class Passenger(Protocol):
    """Live counts that ride in the sync's round trip: queue commands, then read their replies."""

    def contribute(self, pipe: Any, now_second: int) -> int: ...  # the number of commands queued

    def absorb(self, replies: list[Any], now_second: int) -> None: ...


class LiveLatency:
    def __init__(
        self,
        *,
        client_factory: Callable[[], Any] = get_redis,
        sync_interval: float = SYNC_INTERVAL_SECONDS,
        background: bool = True,
    ) -> None:
        self._client_factory = client_factory
        self._sync_interval = sync_interval
        self._background = background
        self._lock = threading.Lock()
        self._local: Buckets = {}  # observed here, not pushed yet
        self._inflight: Buckets = {}  # being pushed right now
        self._remote: Buckets = {}  # the window as last read back (all processes, this one included)
        self._remote_totals: dict[str, _Totals] = {}
        self._remote_second: int | None = None
        # (q, stream, recent, second) -> (monotonic time, result): routing asks on every
        # request, and folding the window costs ~300 µs; see quantiles()
        self._quantile_cache: dict[tuple[float, bool, int, int], tuple[float, dict[str, LiveQuantile]]] = {}
        self._syncs = 0  # successful syncs since the last read of the whole window (0: read it next)
        self._sync_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._passengers: list[Passenger] = []
        this = weakref.ref(self)

        def after_fork_in_child() -> None:
            live = this()
            if live is not None:
                live._after_fork()

        os.register_at_fork(after_in_child=after_fork_in_child)

    def carry(self, passenger: Passenger) -> None:
        """Carry ``passenger``'s counts in every sync's round trip (registered by the app that keeps them)."""
        if passenger not in self._passengers:
            self._passengers.append(passenger)

    # --- the request path ------------------------------------------------------------

    def observe(self, deployment: str, upstream_ms: float, ok: bool, *, stream: bool = False) -> None:
        """Record one attempt (ms: time to first token for streams, upstream time otherwise).

        A failed attempt goes into the histogram as ``LATENCY_ERROR_PENALTY_MS``: for a
        latency objective a deployment that fails is as bad as a slow one.
        """
        second = int(clock_module.clock.time())
        sample_ms = upstream_ms if ok else float(settings.GATEWAY["LATENCY_ERROR_PENALTY_MS"])
        hist_key = f"{'t' if stream else 'h'}{bucket_of(sample_ms)}"
        with self._lock:
            seconds = self._local.get(deployment)
            if seconds is None:
                seconds = self._local[deployment] = {}
            bucket = seconds.get(second)
            if bucket is None:
                bucket = seconds[second] = _new_bucket()
            if ok:
                bucket[0] += int(upstream_ms * 1000)
                bucket[1] += 1
            else:
                bucket[2] += 1
            bucket[3][hist_key] = bucket[3].get(hist_key, 0) + 1
        self._ensure_sync()

    def live(self) -> dict[str, LiveStat]:
        """Deployment name -> decayed mean ms, samples and errors in the window."""
        conf = settings.GATEWAY
        now_second = int(clock_module.clock.time())
        self._ensure_sync()
        with self._lock:
            if self._remote_second != now_second:
                if self._client_factory() is None:
                    self._fold_local(now_second, conf)
                self._remote_totals = {}
                _accumulate(self._remote_totals, self._remote, now_second, conf)
                self._remote_second = now_second
            totals = {name: entry.copy() for name, entry in self._remote_totals.items()}
            _accumulate(totals, self._inflight, now_second, conf)
            _accumulate(totals, self._local, now_second, conf)
        return {
            name: LiveStat(mean_ms=entry.weighted_ms / entry.weight, samples=entry.samples, errors=entry.errors)
            for name, entry in totals.items()
            if entry.weight > 0
        }

    def quantiles(self, q: float, *, stream: bool, recent: int) -> dict[str, LiveQuantile]:
        """Deployment -> the ``q`` percentile of its newest samples (at least ``recent`` when the window has them).

        A result is reused for ``GATEWAY_LATENCY_QUANTILE_CACHE_SECONDS`` (0.25 s) within the
        same second: folding the window costs about 300 µs, which on every request made
        ``cost-slo`` the slowest strategy; the figures behind it (per-second sums, synced
        across processes once a second) move on that scale anyway. The result is shared:
        callers only read it.

        ``stream``: streams' time to first token, else whole answers. Seconds are taken
        newest first until they hold ``recent`` samples; a deployment with fewer in the
        whole window gets the percentile of what there is (``window_samples`` says how
        many: callers decide whether that is enough).
        """
        conf = settings.GATEWAY
        window = conf["LATENCY_WINDOW_SECONDS"]
        now_second = int(clock_module.clock.time())
        prefix = "t" if stream else "h"
        self._ensure_sync()
        cache_seconds = conf["LATENCY_QUANTILE_CACHE_SECONDS"]
        cache_key = (q, stream, recent, now_second)
        if cache_seconds > 0:
            cached = self._quantile_cache.get(cache_key)
            if cached is not None and time.monotonic() - cached[0] < cache_seconds:
                return cached[1]
        per_second: dict[str, dict[int, dict[int, int]]] = {}
        with self._lock:
            if self._client_factory() is None and self._local:
                self._fold_local(now_second, conf)
                self._remote_second = None  # the cached totals of this second lack what was folded
            for source in (self._remote, self._inflight, self._local):
                for deployment, seconds in source.items():
                    target = per_second.setdefault(deployment, {})
                    for second, bucket in seconds.items():
                        if now_second - second >= window:
                            continue
                        counts = target.setdefault(second, {})
                        for name, count in bucket[3].items():
                            if name[0] == prefix:
                                index = int(name[1:])
                                counts[index] = counts.get(index, 0) + count
        result: dict[str, LiveQuantile] = {}
        for deployment, by_second in per_second.items():
            newest, previous = Histogram(), Histogram()
            total = 0
            oldest_used: int | None = None  # the oldest second of the newest read, once it holds ``recent``
            for second in sorted(by_second, reverse=True):
                second_counts = by_second[second]
                count = sum(second_counts.values())
                if not count:
                    continue
                total += count
                if oldest_used is None:
                    newest.merge(second_counts.items())
                    if newest.total >= recent:
                        oldest_used = second
                elif previous.total < recent and second < oldest_used - PREVIOUS_READ_GAP_SECONDS:
                    previous.merge(second_counts.items())
            value = newest.percentile(q)
            if value is not None:
                result[deployment] = LiveQuantile(
                    ms=value,
                    samples=newest.total,
                    window_samples=total,
                    previous_ms=previous.percentile(q),
                    previous_samples=previous.total,
                )
        if cache_seconds > 0:
            if len(self._quantile_cache) > 32:  # older seconds' entries
                self._quantile_cache.clear()
            self._quantile_cache[cache_key] = (time.monotonic(), result)
        return result

    def stats(self) -> dict[str, tuple[float, int]]:
        """deployment name -> (recent mean upstream ms, recent sample count)."""
        return {name: (stat.mean_ms, stat.samples) for name, stat in self.live().items()}

    # --- sharing ---------------------------------------------------------------------

    def _fold_local(self, now_second: int, conf: GatewaySettings) -> None:
        """Embedded mode: this process's observations are the whole view (lock held)."""
        if not self._local:
            return
        _merge(self._remote, self._local)
        self._local = {}
        window = conf["LATENCY_WINDOW_SECONDS"]
        for deployment in list(self._remote):
            seconds = self._remote[deployment]
            for second in [s for s in seconds if now_second - s >= window]:
                del seconds[second]
            if not seconds:
                del self._remote[deployment]

    def sync_now(self) -> None:
        """Push this process's new aggregates and read the shared window back (one round trip)."""
        client = self._client_factory()
        if client is None:
            return
        with self._sync_lock:
            self._sync(client)

    def _sync(self, client: Any) -> None:
        conf = settings.GATEWAY
        window = conf["LATENCY_WINDOW_SECONDS"]
        now_second = int(clock_module.clock.time())
        with self._lock:
            batch, self._local = self._local, {}
            _merge(self._inflight, batch)
            batch = self._inflight
        pipe = client.pipeline(transaction=False)
        keys: set[str] = set()
        for deployment, seconds in batch.items():
            for second, (sum_us, ok, errors, hist) in seconds.items():
                if now_second - second >= window:
                    continue
                key = f"{KEY_PREFIX}{second}"
                if ok:
                    pipe.hincrby(key, f"s|{deployment}", sum_us)
                    pipe.hincrby(key, f"n|{deployment}", ok)
                if errors:
                    pipe.hincrby(key, f"e|{deployment}", errors)
                for name, count in hist.items():
                    pipe.hincrby(key, f"{name}|{deployment}", count)
                keys.add(key)
        for key in keys:
            pipe.expire(key, window + 10)
        first = now_second - window + 1
        full = self._syncs % FULL_READ_EVERY == 0
        if full:
            seconds_read = list(range(first, now_second + 1))
        else:  # the recent seconds, and older ones this process just pushed to (its own late push)
            pushed = {int(key[len(KEY_PREFIX) :]) for key in keys}
            recent = range(max(first, now_second - RECENT_SECONDS + 1), now_second + 1)
            seconds_read = sorted(pushed.union(recent))
        for second in seconds_read:
            pipe.hgetall(f"{KEY_PREFIX}{second}")

        shared = [(passenger, passenger.contribute(pipe, now_second)) for passenger in self._passengers]
        shared_commands = sum(count for _, count in shared)
        try:
            replies = pipe.execute()
        except BaseException:
            with self._lock:  # keep what was not pushed for the next attempt
                _merge(self._local, self._inflight)
                self._inflight = {}
                self._syncs = 0  # others may have pushed late meanwhile: read the whole window next
            raise
        if shared_commands:
            tail = replies[-shared_commands:]
            replies = replies[:-shared_commands]
            for passenger, count in shared:
                passenger.absorb(tail[:count], now_second)
                tail = tail[count:]
        remote: Buckets = {}
        for second, fields in zip(seconds_read, replies[len(replies) - len(seconds_read) :], strict=True):
            for raw_field, raw_value in fields.items():
                kind, _, deployment = raw_field.decode().partition("|")
                bucket = remote.setdefault(deployment, {}).get(second)
                if bucket is None:
                    bucket = remote[deployment][second] = _new_bucket()
                if kind in ("s", "n", "e"):
                    bucket["sne".index(kind)] += int(raw_value)
                elif kind[:1] in ("h", "t"):
                    bucket[3][kind] = bucket[3].get(kind, 0) + int(raw_value)
        if not full:  # keep the seconds not read again, as last read, within the window
            read = set(seconds_read)
            for deployment, seconds in self._remote.items():
                kept = {second: bucket for second, bucket in seconds.items() if second >= first and second not in read}
                if kept:
                    remote.setdefault(deployment, {}).update(kept)
        with self._lock:
            self._remote = remote
            self._inflight = {}
            self._remote_second = None
            self._syncs += 1

    def _after_fork(self) -> None:
        """In a forked child: no sync thread yet, locks fresh, the parent's observations dropped."""
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._thread = None
        self._forget()

    def _ensure_sync(self) -> None:
        if self._thread is not None or not self._background:
            return
        if self._client_factory() is None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="live-latency-sync", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        failures = 0
        while True:
            time.sleep(self._sync_interval)
            try:
                self.sync_now()
                failures = 0
            except Exception:  # noqa: BLE001 - Redis down: routing keeps working on local data
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    logger.warning("live latency: sync failed (%d in a row)", failures, exc_info=True)

    def reset(self) -> None:
        """Forget everything this process knows (tests)."""
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        """No observation, no view read back, no percentile kept: as a new process starts."""
        self._local, self._inflight, self._remote = {}, {}, {}
        self._remote_totals = {}
        self._remote_second = None
        self._quantile_cache = {}
        self._syncs = 0


live_latency = LiveLatency()
