"""Fixed log-spaced latency histograms, mergeable, and the percentiles read from them.

Bucket edges are ``GROWTH ** k`` ms for k = 0..LAST_EDGE (1 ms up to ~10.4 min):

- bucket 0 holds [0, 1) ms,
- bucket k (1..LAST_EDGE) holds [GROWTH**(k-1), GROWTH**k) ms,
- bucket LAST_EDGE + 1 holds everything from ~10.4 min up.

Every rollup uses the same edges, so histograms of different minutes, deployments or
processes merge by adding counts. A histogram is stored sparse, as ``[[bucket, count],
...]`` sorted by bucket (a JSON list; empty buckets are left out).

A percentile is the nearest-rank value (the ceil(q * n)-th smallest sample) estimated
as the geometric middle of its bucket, clamped to the exact min and max. For a value v
of at least 1 ms the estimate is within ``RELATIVE_ERROR`` of v: the middle of
[L, gL) is L*sqrt(g), off by at most sqrt(g) - 1 = 4.9% for g = 1.1. Below 1 ms the
error is at most 0.5 ms absolute; above the last edge the estimate is the exact max.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable

GROWTH = 1.1
LAST_EDGE = 140  # 1.1 ** 140 ms is about 10.4 minutes
EDGES: tuple[float, ...] = tuple(GROWTH**k for k in range(LAST_EDGE + 1))
OVERFLOW = LAST_EDGE + 1
RELATIVE_ERROR = math.sqrt(GROWTH) - 1

Sparse = list[list[int]]


def bucket_of(ms: float) -> int:
    """The bucket index of a latency in milliseconds."""
    return bisect_right(EDGES, ms) if ms >= 0 else 0


def bucket_value(index: int) -> float | None:
    """The representative (geometric middle) of a bucket; None for the open-ended overflow bucket."""
    if index <= 0:
        return 0.5
    if index > LAST_EDGE:
        return None
    return EDGES[index - 1] * math.sqrt(GROWTH)


class Histogram:
    """Counts per bucket; build with ``add`` or ``merge``, read with ``percentile``."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    def add(self, ms: float, count: int = 1) -> None:
        index = bucket_of(ms)
        self.counts[index] = self.counts.get(index, 0) + count
        self.total += count

    def merge(self, sparse: Iterable[Iterable[int]]) -> None:
        """Add a stored sparse histogram (``[[bucket, count], ...]``)."""
        for index, count in sparse:
            self.counts[int(index)] = self.counts.get(int(index), 0) + int(count)
            self.total += int(count)

    def sparse(self) -> Sparse:
        return [[index, self.counts[index]] for index in sorted(self.counts) if self.counts[index]]

    def percentile(self, q: float, *, low: float | None = None, high: float | None = None) -> float | None:
        """Nearest-rank ``q`` percentile (0 < q <= 1), clamped to the known ``low``/``high``."""
        if self.total <= 0:
            return None
        rank = max(1, math.ceil(q * self.total - 1e-9))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                value = bucket_value(index)
                if value is None:
                    value = high if high is not None else EDGES[-1]
                if low is not None:
                    value = max(value, low)
                if high is not None:
                    value = min(value, high)
                return value
        return high


def histogram_from(sparse_lists: Iterable[Iterable[Iterable[int]]]) -> Histogram:
    """One histogram merged from several stored sparse ones."""
    histogram = Histogram()
    for sparse in sparse_lists:
        histogram.merge(sparse)
    return histogram
