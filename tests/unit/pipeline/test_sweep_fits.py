"""The report's conclusions as numbers, on synthetic data of known answer: a power law's exponent and a prediction
recovered within their bootstrap intervals, a paired comparison over seeds, a scaling fit over model sizes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.sweep.fits import (
    NoConclusion,
    compare_best_two,
    fit_power_law,
    paired_interval,
    t_quantile_975,
)

E, A, ALPHA = 1.5, 3.0, 0.4  # a val curve in steps: L(t) = E + A t^-alpha
STEPS = np.arange(50, 1001, 50, dtype=float)  # 20 evaluations


def curve(steps: np.ndarray) -> np.ndarray:
    return E + A * steps**-ALPHA


def test_fit_recovers_a_noiseless_power_law() -> None:
    fit = fit_power_law(STEPS, curve(STEPS))
    assert fit.law.alpha == pytest.approx(ALPHA, rel=0.005)  # the exponent grid is 0.6% apart
    assert fit.law.e == pytest.approx(E, abs=0.01)
    assert fit.predict(4000) == pytest.approx(E + A * 4000**-ALPHA, abs=1e-3)


def test_fit_recovers_the_exponent_and_the_prediction_within_their_intervals() -> None:
    budget = 4 * STEPS[-1]
    truth = E + A * budget**-ALPHA
    alphas, predictions = [], []
    for seed in range(12):
        noisy = curve(STEPS) + np.random.default_rng(seed).normal(0.0, 0.005, len(STEPS))
        fit = fit_power_law(STEPS, noisy)
        low, high = fit.alpha_interval()
        alphas.append((low <= ALPHA <= high, high - low))
        p_low, p_high = fit.predict_interval(budget)
        predictions.append((p_low <= truth <= p_high, p_high - p_low))
        assert low <= fit.law.alpha <= high and p_low <= fit.predict(budget) <= p_high
    # 95% intervals: at most one miss in twelve draws, and narrow enough to say something (sd 0.005 noise)
    assert sum(hit for hit, _ in alphas) >= 11 and max(width for _, width in alphas) < 0.15, alphas
    assert sum(hit for hit, _ in predictions) >= 11 and max(width for _, width in predictions) < 0.05, predictions


def test_the_bootstrap_is_the_same_every_time() -> None:
    noisy = curve(STEPS) + np.random.default_rng(0).normal(0.0, 0.005, len(STEPS))
    first, second = fit_power_law(STEPS, noisy), fit_power_law(STEPS, noisy)
    assert first.alpha_interval() == second.alpha_interval()
    assert first.predict_interval(4000) == second.predict_interval(4000)


def test_a_few_evaluations_give_a_wider_interval_that_still_holds_the_truth() -> None:
    steps = np.arange(50, 301, 50, dtype=float)  # the example sweep: 6 evaluations of 300 steps
    noisy = curve(steps) + np.random.default_rng(3).normal(0.0, 0.003, len(steps))
    fit = fit_power_law(steps, noisy)
    low, high = fit.alpha_interval()
    assert low <= ALPHA <= high and 0.0 < high - low < 1.0
    p_low, p_high = fit.predict_interval(1200)
    assert p_low <= E + A * 1200**-ALPHA <= p_high


@pytest.mark.parametrize(
    ("x", "y", "why"),
    [
        ([10, 20, 30, 40], [4.0, 3.0, 2.5, 2.2], "4 points: a power law of 3 parameters needs at least 5"),
        ([10, 10, 20, 20, 30], [4.0, 3.9, 3.0, 3.1, 2.5], "3 distinct x values"),
        ([10, 20, 30, 40, 50], [2.0, 2.1, 2.3, 2.2, 2.4], "the curve does not fall"),
        ([10, 20, 30, 40, 50, 60], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0], "not follow a power law"),  # a straight line
    ],
)
def test_no_fit_says_why(x: list[float], y: list[float], why: str) -> None:
    with pytest.raises(NoConclusion, match=why):
        fit_power_law(x, y)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="one length"):
        fit_power_law([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([0, 1, 2, 3, 4], [5, 4, 3, 2, 1])


def test_t_quantiles_are_students() -> None:
    assert t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile_975(4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-4)  # past the table: the expansion
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=1e-4)
    mean, low, high = paired_interval([0.1, 0.3])
    assert (mean, low, high) == pytest.approx((0.2, 0.2 - 12.7062 * 0.1, 0.2 + 12.7062 * 0.1))


def seed_losses(*, offset: float, shared_sd: float, own_sd: float, seeds: int = 4) -> dict[str, dict[int, float]]:
    """Two settings over ``seeds`` seeds: ``b`` is ``offset`` worse than ``a``; each seed moves both by the same
    draw (sd ``shared_sd``) and each point by its own (sd ``own_sd``)."""
    rng = np.random.default_rng(7)
    shared = rng.normal(0.0, shared_sd, seeds)
    return {
        "a": {s + 1: 2.0 + shared[s] + rng.normal(0.0, own_sd) for s in range(seeds)},
        "b": {s + 1: 2.0 + offset + shared[s] + rng.normal(0.0, own_sd) for s in range(seeds)},
    }


def test_a_difference_larger_than_the_noise_beats() -> None:
    comparison = compare_best_two(seed_losses(offset=0.1, shared_sd=0.02, own_sd=0.005))
    assert (comparison.best, comparison.runner_up, comparison.seeds) == ("a", "b", (1, 2, 3, 4))
    assert comparison.low <= 0.1 <= comparison.high and comparison.beats


def test_a_difference_within_the_noise_does_not_beat() -> None:
    comparison = compare_best_two(seed_losses(offset=0.002, shared_sd=0.02, own_sd=0.02))
    assert comparison.low < 0 < comparison.high and not comparison.beats


def test_pairing_by_seed_tells_apart_what_the_spread_over_seeds_hides() -> None:
    losses = seed_losses(offset=0.03, shared_sd=0.1, own_sd=0.003)  # seeds spread 0.1, the settings differ by 0.03
    a, b = (np.array(list(losses[name].values())) for name in "ab")
    assert abs(a.mean() - b.mean()) < a.std(ddof=1)  # unpaired, the difference is within one sd of the seeds
    assert compare_best_two(losses).beats


def test_settings_of_one_seed_take_no_part() -> None:
    losses = {**seed_losses(offset=0.1, shared_sd=0.02, own_sd=0.005), "lucky": {1: 0.5}}
    assert compare_best_two(losses).best == "a"
    with pytest.raises(NoConclusion, match="1 setting"):
        compare_best_two({"a": {1: 2.0, 2: 2.1}, "b": {1: 1.9}})
    with pytest.raises(NoConclusion, match="share 1 seed"):
        compare_best_two({"a": {1: 2.0, 2: 2.1}, "b": {1: 2.2, 3: 2.3}})


def test_scaling_fit_over_model_sizes_recovers_its_exponent() -> None:
    """Chinchilla's L(N) = 1.69 + 406.4 N^-0.34 over six sizes from 1M to 300M, two seeds each."""
    sizes = np.repeat(np.geomspace(1e6, 3e8, 6), 2)
    losses = 1.69 + 406.4 * sizes**-0.34 + np.random.default_rng(1).normal(0.0, 0.01, len(sizes))
    fit = fit_power_law(sizes, losses)
    low, high = fit.alpha_interval()
    assert low <= 0.34 <= high and high - low < 0.2, (low, high)
    assert fit.predict(1e9) == pytest.approx(1.69 + 406.4 * 1e9**-0.34, abs=0.05)
