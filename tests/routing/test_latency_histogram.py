"""Log-spaced latency histograms: bucket edges, merging, percentiles within the documented bound."""

from __future__ import annotations

import math
import random

import pytest

from usage.latency.histogram import EDGES, GROWTH, OVERFLOW, RELATIVE_ERROR, Histogram, bucket_of, histogram_from


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_bucket_edges() -> None:
    assert bucket_of(0) == 0
    assert bucket_of(0.99) == 0
    assert bucket_of(1.0) == 1
    assert bucket_of(1.09) == 1
    assert bucket_of(1.1) == 2
    assert bucket_of(EDGES[-1]) == OVERFLOW
    assert bucket_of(10**9) == OVERFLOW
    assert EDGES[-1] >= 10 * 60 * 1000  # covers ten minutes
    assert math.isclose(RELATIVE_ERROR, math.sqrt(GROWTH) - 1)
    assert RELATIVE_ERROR < 0.05


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_within_relative_error(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(5, 1.2) + 1 for _ in range(5000)]  # ~150 ms median, long tail
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    for q in (0.5, 0.95, 0.99):
        estimate = histogram.percentile(q, low=min(values), high=max(values))
        exact = exact_percentile(values, q)
        assert abs(estimate - exact) <= exact * RELATIVE_ERROR + 1e-9, (q, estimate, exact)


def test_percentiles_of_known_samples() -> None:
    histogram = Histogram()
    for value in range(1, 101):
        histogram.add(float(value))
    assert histogram.total == 100
    assert histogram.percentile(0.5) == pytest.approx(50, rel=RELATIVE_ERROR)
    assert histogram.percentile(0.95) == pytest.approx(95, rel=RELATIVE_ERROR)
    assert histogram.percentile(0.99) == pytest.approx(99, rel=RELATIVE_ERROR)
    # clamped to the known extremes
    assert histogram.percentile(1.0, low=1, high=100) <= 100
    single = Histogram()
    single.add(123.4)
    assert single.percentile(0.5, low=123.4, high=123.4) == 123.4
    assert Histogram().percentile(0.5) is None


def test_sparse_merge_equals_one_histogram() -> None:
    rng = random.Random(7)
    values = [rng.uniform(0.2, 4000) for _ in range(3000)]
    whole = Histogram()
    parts = [Histogram() for _ in range(5)]
    for index, value in enumerate(values):
        whole.add(value)
        parts[index % 5].add(value)
    merged = histogram_from(part.sparse() for part in parts)
    assert merged.sparse() == whole.sparse()
    assert merged.total == len(values)
    assert all(count > 0 for _, count in whole.sparse())
    assert [index for index, _ in whole.sparse()] == sorted(index for index, _ in whole.sparse())


def test_sub_millisecond_and_overflow() -> None:
    histogram = Histogram()
    histogram.add(0.2)
    histogram.add(0.4)
    assert abs(histogram.percentile(0.5) - 0.2) <= 0.5
    big = Histogram()
    big.add(2_000_000.0)
    assert big.percentile(0.99, high=2_000_000.0) == 2_000_000.0
