"""Statistics the benchmarks share: a paired bootstrap interval of a pooled ratio."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pooled_ratio(numerator_seconds: Sequence[float], denominator_seconds: Sequence[float]) -> float:
    """Total ``numerator_seconds`` over total ``denominator_seconds``: with the same steps timed on each side,
    the ratio of mean step times (a throughput ratio the other way round)."""
    return float(np.sum(numerator_seconds) / np.sum(denominator_seconds))


def bootstrap_ratio(
    numerator_seconds: Sequence[float],
    denominator_seconds: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``pooled_ratio`` of paired timings and its percentile bootstrap interval at ``confidence``.

    Pairs are resampled whole (element i of both sides together): each pair ran interleaved, so what
    slowed the machine during it slowed both sides, and resampling pairs keeps that. Seeded: the same
    timings give the same interval.
    """
    num, den = np.asarray(numerator_seconds, dtype=float), np.asarray(denominator_seconds, dtype=float)
    if num.shape != den.shape or num.ndim != 1 or len(num) == 0:
        raise ValueError(f"bootstrap_ratio needs two equally long, non-empty series, got {num.shape} and {den.shape}")
    picks = np.random.default_rng(seed).integers(0, len(num), size=(resamples, len(num)))  # (resamples, pairs)
    ratios = num[picks].sum(axis=1) / den[picks].sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return pooled_ratio(num, den), float(low), float(high)
