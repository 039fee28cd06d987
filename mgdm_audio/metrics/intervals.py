r"""Confidence intervals for the benchmarks: Student-t intervals for means and paired differences, and a seeded
percentile bootstrap for statistics that have no closed form (average ranks).

One-sample t interval of ``n`` values ``x_i`` with mean :math:`\bar x` and sample standard deviation
:math:`s = \sqrt{\sum_i (x_i - \bar x)^2 / (n - 1)}`:

.. math:: \bar x \pm t_{1 - \alpha/2,\, n-1} \, s / \sqrt{n}

(``level = 1 - alpha``; with few values the t quantile is much wider than the normal 1.96: ``t_{0.975, 4}`` is
2.78). A paired difference of ``a_i`` and ``b_i`` measured on the same items (chunks, problems, images) is the
one-sample interval of ``d_i = a_i - b_i``: the item-to-item variation that ``a`` and ``b`` share cancels.

Percentile bootstrap of a statistic ``T`` of ``n`` items: ``B`` resamples of ``n`` item indices drawn with
replacement (``numpy.random.default_rng(seed).integers(0, n, (B, n))``), ``T`` on each, and the
``alpha/2`` and ``1 - alpha/2`` percentiles of the ``B`` values (linear interpolation, as ``numpy.percentile``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A mean with its t interval ``[lo, hi]`` over ``n`` values of standard deviation ``sd`` (``lo``/``hi`` are
    NaN when ``n < 2``: one value has no spread to estimate)."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    level: float = LEVEL

    @property
    def defined(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def contains_zero(self) -> bool:
        """True when the interval is undefined or holds 0 (the data cannot tell the sign of the mean)."""
        return not self.defined or self.lo <= 0.0 <= self.hi

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: ``{"mean", "lo", "hi", "n", "sd", "level"}`` with ``None`` for undefined values."""

        def finite(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "mean": finite(self.mean),
            "lo": finite(self.lo),
            "hi": finite(self.hi),
            "n": self.n,
            "sd": finite(self.sd),
            "level": self.level,
        }

    def bracket(self, digits: int = 2) -> str:
        """``"+0.77 [-2.91, +4.46]"`` (signed), or ``"+0.77 [n = 1]"`` when undefined."""
        if not self.defined:
            return f"{self.mean:+.{digits}f} [n = {self.n}]"
        return f"{self.mean:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def t_quantile(level: float, dof: int) -> float:
    """The two-sided Student-t quantile ``t_{(1 + level)/2, dof}`` (``scipy.stats.t.ppf``)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if dof < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, got {dof}")
    return float(stats.t.ppf(0.5 + level / 2.0, dof))


def t_interval(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> Interval:
    """One-sample Student-t interval of the mean of ``values`` (non-finite values are an error, not skipped)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = int(x.size)
    if n == 0:
        raise ValueError("a t interval needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError("a t interval needs finite values")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, math.nan, level)
    sd = float(x.std(ddof=1))
    half = t_quantile(level, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, level)


def paired_difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = LEVEL
) -> Interval:
    """t interval of the mean of ``a_i - b_i`` over items measured under both (same length, same order)."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same number of items, got {x.size} and {y.size}")
    return t_interval(x - y, level)


def paired_on_common(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> tuple[Interval, int] | None:
    """:func:`paired_difference` of ``a[k] - b[k]`` over the items ``k`` both have (in ``a``'s order), and on how many
    of them ``a`` is lower; ``None`` when they share no item."""
    common = [k for k in a if k in b]
    if not common:
        return None
    x, y = [a[k] for k in common], [b[k] for k in common]
    return paired_difference(x, y), sum(u < v for u, v in zip(x, y, strict=True))


@dataclass(frozen=True)
class Bootstrap:
    """A statistic (vector of ``k`` values) on the data, its percentile interval per entry, and every resample's
    values ``samples (B, k)`` (e.g. for how often each entry is the smallest)."""

    estimate: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    samples: np.ndarray
    level: float = LEVEL


def bootstrap_percentile(
    statistic: Callable[[np.ndarray], Sequence[float] | np.ndarray],
    n: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> Bootstrap:
    """Percentile bootstrap over ``n`` items: ``statistic(indices)`` gets an index array (``arange(n)`` for the
    estimate, a resample with replacement otherwise) and returns ``k`` values."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one item")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    estimate = np.atleast_1d(np.asarray(statistic(np.arange(n)), dtype=np.float64))
    indices = np.random.default_rng(seed).integers(0, n, (resamples, n))
    samples = np.stack([np.atleast_1d(np.asarray(statistic(i), dtype=np.float64)) for i in indices])
    alpha = 1.0 - level
    lo, hi = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return Bootstrap(estimate, lo, hi, samples, level)


def plain_words(diff: Interval, unit: str = "dB", digits: int = 2) -> str:
    """The difference in words, as magnitudes: ``"ahead by 0.77 dB [0.12, 1.40]"``, ``"behind by 0.77 dB [0.12,
    1.40]"`` (a difference of -0.77 [-1.40, -0.12]), or ``"level with (+0.31 dB [-0.50, +1.12])"`` when the interval
    holds 0 (or is undefined)."""
    if diff.contains_zero:
        return f"level with ({diff.bracket(digits)} {unit})"
    word, lo, hi = ("ahead", diff.lo, diff.hi) if diff.mean > 0 else ("behind", -diff.hi, -diff.lo)
    return f"{word} by {abs(diff.mean):.{digits}f} {unit} [{lo:.{digits}f}, {hi:.{digits}f}]"
