"""The benchmarks' paired bootstrap of a pooled ratio (bench/stats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.stats import bootstrap_ratio, pooled_ratio


def test_the_pooled_ratio_is_the_ratio_of_total_times() -> None:
    assert pooled_ratio([2.0, 4.0], [1.0, 4.0]) == pytest.approx(1.2)  # the mean of the pairs' ratios is 1.5


def test_identical_pairs_give_a_point_interval() -> None:
    assert bootstrap_ratio([2.0] * 10, [1.0] * 10) == (2.0, 2.0, 2.0)


def test_the_interval_holds_the_point_shrinks_with_more_pairs_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    noise = rng.lognormal(0, 0.2, size=400)  # what the machine does to a pair: both sides alike
    ref = noise * rng.lognormal(0, 0.05, size=400)
    ours = 0.99 * noise * rng.lognormal(0, 0.05, size=400)
    point, low, high = bootstrap_ratio(ref, ours)
    assert low < point < high and low < 1 / 0.99 + 0.02 and high > 1 / 0.99 - 0.02
    _, low_few, high_few = bootstrap_ratio(ref[:25], ours[:25])
    assert high_few - low_few > high - low
    assert bootstrap_ratio(ref, ours, seed=3) == bootstrap_ratio(ref, ours, seed=3)


def test_unpaired_series_are_refused() -> None:
    with pytest.raises(ValueError, match="equally long"):
        bootstrap_ratio([1.0, 2.0], [1.0])
