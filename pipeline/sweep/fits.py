"""The numbers behind a sweep report's conclusions: power-law fits with bootstrap intervals, and a paired comparison
over seeds. Pure functions over numbers (numpy only); ``pipeline.sweep.report`` reads the points and draws them.

- ``fit_power_law(x, y)``: ``L(x) = E + A * x**-alpha`` by least squares, with 95% intervals from a residual
  bootstrap. The report fits each point's val curve (x in steps, and predicts the loss at a larger budget) and the
  best val loss of each model size (x in parameters: a Chinchilla-style ``L(N)``).
- ``compare_best_two(losses)``: the setting of lowest mean loss against the runner-up, paired by seed, with a
  Student t interval of the difference.

Where the data allow no fit (too few points, a curve that does not fall, one seed) these raise ``NoConclusion``,
whose message says why in one line.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

LEVEL = 0.95  # of the bootstrap intervals; the t interval is 95% too (T_975)
RESAMPLES = 1000  # bootstrap refits of a power law
SEED = 0  # of the bootstrap's resampling: a report is the same every time it is written
# The exponents searched: for each, E and A are a linear least-squares fit, so the search is exact up to the grid's
# spacing (0.6% apart). A best exponent on either end means the points are not a power law in this range.
ALPHAS = np.geomspace(0.01, 4.0, 1000)
N_PARAMETERS = 3  # E, A, alpha
MIN_POINTS = N_PARAMETERS + 2  # residuals left over for the bootstrap to resample
MIN_DISTINCT_X = N_PARAMETERS + 1
# Student t quantiles at 0.975 for 1 to 30 degrees of freedom; beyond, a Cornish-Fisher expansion (within 1e-4).
T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
Z_975 = 1.959964


class NoConclusion(ValueError):
    """The data allow no fit or comparison; the message says why, in one line."""


@dataclass(frozen=True)
class PowerLaw:
    """``L(x) = e + a * (x / scale) ** -alpha``: x is divided by ``scale`` (the geometric mean of the fitted x) so
    that ``a`` stays a plain number when x is a step count or a parameter count."""

    e: float
    a: float
    alpha: float
    scale: float

    def __call__(self, x: float) -> float:
        return self.e + self.a * (x / self.scale) ** -self.alpha


@dataclass(frozen=True, eq=False)
class PowerLawFit:
    """A least-squares power law and its bootstrap refits (``e``, ``a``, ``alpha`` per row)."""

    law: PowerLaw
    refits: np.ndarray = field(repr=False)  # (RESAMPLES, 3)
    n: int  # the points fitted

    def alpha_interval(self) -> tuple[float, float]:
        """The 95% percentile interval of the exponent."""
        return _percentiles(self.refits[:, 2])

    def e_interval(self) -> tuple[float, float]:
        """The 95% percentile interval of the asymptote E."""
        return _percentiles(self.refits[:, 0])

    def predict(self, x: float) -> float:
        """The fitted loss at ``x``."""
        return self.law(x)

    def predict_interval(self, x: float) -> tuple[float, float]:
        """The 95% percentile interval of the fitted loss at ``x`` over the refits: where the curve itself lies,
        not where one more noisy evaluation would fall."""
        e, a, alpha = self.refits.T
        return _percentiles(e + a * (x / self.law.scale) ** -alpha)


@dataclass(frozen=True)
class PairedComparison:
    """The best setting against the runner-up over the seeds both ran: ``differences`` are the runner-up's loss
    minus the best's, seed by seed, and ``low``, ``high`` the 95% t interval of their mean."""

    best: str
    runner_up: str
    seeds: tuple[Hashable, ...]
    differences: tuple[float, ...]
    mean: float
    low: float
    high: float

    @property
    def beats(self) -> bool:
        """The best is lower beyond seed noise: the whole interval of the difference is above zero."""
        return self.low > 0


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def _least_squares(u: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``(e, a, alpha)`` per row of ``ys`` (B, n) minimising the squared error of ``e + a * u**-alpha`` over
    ``ALPHAS``, with ``a >= 0`` (a rising curve gets ``a = 0``: a flat line at its mean)."""
    basis = u[None, :] ** -ALPHAS[:, None]  # (K, n)
    centred = basis - basis.mean(axis=1, keepdims=True)
    suu = (centred**2).sum(axis=1)  # (K,)
    suy = centred @ (ys - ys.mean(axis=1, keepdims=True)).T  # (K, B)
    # For each exponent, the least-squares line in u**-alpha lowers the squared error by suy**2 / suu.
    gain = np.where(suy > 0, suy**2 / suu[:, None], 0.0)
    best = gain.argmax(axis=0)  # (B,)
    a = np.maximum(suy[best, np.arange(len(ys))], 0.0) / suu[best]
    e = ys.mean(axis=1) - a * basis[best].mean(axis=1)
    return np.stack([e, a, ALPHAS[best]], axis=1)


def fit_power_law(x: Sequence[float], y: Sequence[float], *, resamples: int = RESAMPLES) -> PowerLawFit:
    """Fit ``L(x) = E + A * x**-alpha`` (A > 0, alpha in 0.01 to 4) by least squares, with a residual bootstrap.

    The bootstrap keeps the x values and resamples the fit's residuals (inflated by ``sqrt(n / (n - 3))`` for the
    three fitted parameters), then refits: the x values (the steps of an evaluation, the model sizes of a sweep)
    are chosen, not drawn, and resampling whole points would often drop the ends of the curve that set the
    exponent. It assumes the residuals are exchangeable: where they are correlated along a curve, the intervals
    are too narrow. Raises ``NoConclusion`` for too few points, a curve that does not fall, or one that is not a
    power law in the searched range."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be two lists of one length, got {xs.shape} and {ys.shape}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all() and (xs > 0).all()):
        raise ValueError("x must be positive and x and y finite")
    n = len(xs)
    if n < MIN_POINTS:
        raise NoConclusion(f"{n} points: a power law of 3 parameters needs at least {MIN_POINTS}")
    if len(set(xs.tolist())) < MIN_DISTINCT_X:
        raise NoConclusion(f"{len(set(xs.tolist()))} distinct x values: the fit needs at least {MIN_DISTINCT_X}")
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    if ys[-1] >= ys[0]:
        raise NoConclusion(f"the curve does not fall ({ys[0]:.4g} at first, {ys[-1]:.4g} at last)")
    scale = float(np.exp(np.log(xs).mean()))
    u = xs / scale
    e, a, alpha = _least_squares(u, ys[None, :])[0]
    if a <= 0:
        raise NoConclusion("the curve does not fall: no power law with A > 0 fits it")
    if alpha in (ALPHAS[0], ALPHAS[-1]):
        raise NoConclusion(
            f"the best exponent is at the end of the searched range ({ALPHAS[0]:g} to {ALPHAS[-1]:g}): "
            "the points do not follow a power law"
        )
    law = PowerLaw(float(e), float(a), float(alpha), scale)
    fitted = e + a * u**-alpha
    residuals = (ys - fitted) * math.sqrt(n / (n - N_PARAMETERS))
    rng = np.random.default_rng(SEED)
    samples = fitted[None, :] + residuals[rng.integers(0, n, size=(resamples, n))]
    return PowerLawFit(law, _least_squares(u, samples), n)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (the half-width factor of a 95% interval)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def paired_interval(differences: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% Student t interval of paired differences (at least 2).

    A t interval, not a bootstrap: a sweep has a handful of seeds, and a bootstrap over 2 or 3 values has only a
    few distinct means, so its percentiles are far too narrow; the t interval widens with few seeds as it should
    (exact when the differences are normal)."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        raise NoConclusion(f"{len(d)} paired seed(s): an interval over seeds needs at least 2")
    mean = float(d.mean())
    half = t_quantile_975(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def compare_best_two(losses: Mapping[str, Mapping[Hashable, float]]) -> PairedComparison:
    """The setting of lowest mean loss against the runner-up, over the seeds both ran.

    ``losses`` maps a setting's name to its loss by seed; settings of fewer than 2 seeds take no part. Ties of
    the mean go to the name first in sort order. Pairing by seed removes what a seed does to both settings alike
    (initialisation, batch order), so a difference smaller than the spread over seeds can still be told apart."""
    ranked = sorted(
        (float(np.mean(list(by_seed.values()))), name) for name, by_seed in losses.items() if len(by_seed) >= 2
    )
    if len(ranked) < 2:
        raise NoConclusion(f"{len(ranked)} setting(s) with at least 2 seeds: a comparison needs two")
    (_, best), (_, runner_up) = ranked[:2]
    seeds = tuple(seed for seed in losses[best] if seed in losses[runner_up])
    if len(seeds) < 2:
        raise NoConclusion(f"{best} and {runner_up} share {len(seeds)} seed(s): pairing needs at least 2")
    differences = tuple(float(losses[runner_up][s] - losses[best][s]) for s in seeds)
    mean, low, high = paired_interval(differences)
    return PairedComparison(best, runner_up, seeds, differences, mean, low, high)
