"""t intervals and paired differences against scipy's t distribution and paired t-test; the percentile bootstrap
against scipy.stats.bootstrap on the same resamples, and its seeding."""

import math

import numpy as np
import pytest
from scipy import stats

from mgdm_audio.metrics.intervals import (
    bootstrap_percentile,
    paired_difference,
    plain_words,
    t_interval,
    t_quantile,
)


def test_t_quantile_is_wider_than_normal_for_few_values():
    assert t_quantile(0.95, 4) == pytest.approx(2.7764451, abs=1e-6)  # tables: t_{0.975, 4}
    assert t_quantile(0.95, 1) == pytest.approx(12.7062047, abs=1e-6)
    assert t_quantile(0.95, 10_000) == pytest.approx(1.959964, abs=1e-3)  # tends to the normal quantile
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)


def test_t_interval_matches_the_closed_form():
    x = np.array([1.0, 2.0, 4.0, 7.0, 11.0])
    ci = t_interval(x)
    half = stats.t.ppf(0.975, 4) * x.std(ddof=1) / math.sqrt(5)
    assert ci.mean == pytest.approx(5.0) and ci.n == 5 and ci.sd == pytest.approx(x.std(ddof=1))
    assert (ci.lo, ci.hi) == pytest.approx((5.0 - half, 5.0 + half))
    lo, hi = stats.t.interval(0.95, 4, loc=x.mean(), scale=stats.sem(x))
    assert (ci.lo, ci.hi) == pytest.approx((lo, hi))
    ci90 = t_interval(x, level=0.9)
    assert ci.lo < ci90.lo < ci90.hi < ci.hi


def test_paired_difference_agrees_with_the_paired_t_test():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 5, 12)  # item effects both runs share: they cancel in the pairs
    a, b = shared + 0.8 + rng.normal(0, 0.5, 12), shared + rng.normal(0, 0.5, 12)
    d = paired_difference(a, b)
    test = stats.ttest_rel(a, b)
    ci = test.confidence_interval(0.95)
    assert (d.lo, d.hi) == pytest.approx((ci.low, ci.high))
    assert d.mean == pytest.approx(float(np.mean(a - b)))
    # the interval excludes 0 exactly when the two-sided test rejects at 5 %
    assert (not d.contains_zero) == (test.pvalue < 0.05)
    unpaired = stats.ttest_ind(a, b).confidence_interval(0.95)
    assert d.hi - d.lo < (unpaired.high - unpaired.low) / 3  # pairing removes the shared spread
    with pytest.raises(ValueError, match="same number"):
        paired_difference(a, b[:-1])


def test_one_value_and_constant_values():
    one = t_interval([3.0])
    assert one.n == 1 and not one.defined and one.contains_zero
    assert one.as_dict() == {"mean": 3.0, "lo": None, "hi": None, "n": 1, "sd": None, "level": 0.95}
    flat = t_interval([2.0, 2.0, 2.0])
    assert (flat.lo, flat.hi, flat.sd) == (2.0, 2.0, 0.0) and not flat.contains_zero
    with pytest.raises(ValueError):
        t_interval([])
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, float("nan")])


def test_plain_words():
    ahead = paired_difference([3.0, 4.0, 5.0, 4.5], [1.0, 1.5, 2.0, 2.5])
    assert plain_words(ahead).startswith(f"ahead by {ahead.mean:.2f} dB [")
    assert plain_words(ahead) == f"ahead by {ahead.mean:.2f} dB [{ahead.lo:.2f}, {ahead.hi:.2f}]"
    behind = paired_difference([1.0, 1.5, 2.0, 2.5], [3.0, 4.0, 5.0, 4.5])
    assert plain_words(behind) == f"behind by {-behind.mean:.2f} dB [{-behind.hi:.2f}, {-behind.lo:.2f}]"
    assert 0 < -behind.hi < -behind.mean < -behind.lo  # magnitudes, smallest first
    level = paired_difference([1.0, 3.0, 2.0], [2.0, 1.0, 2.5])
    assert level.contains_zero and plain_words(level).startswith("level with (")


def test_bootstrap_matches_scipy_on_the_same_resamples_and_is_seeded():
    x = np.random.default_rng(1).gamma(2.0, 1.0, 25)
    ours = bootstrap_percentile(lambda i: [x[i].mean()], len(x), resamples=999, seed=7)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=999, method="percentile", rng=np.random.default_rng(7), vectorized=True
    )
    assert ours.estimate[0] == pytest.approx(x.mean())
    assert ours.lo[0] == pytest.approx(ref.confidence_interval.low)
    assert ours.hi[0] == pytest.approx(ref.confidence_interval.high)
    again = bootstrap_percentile(lambda i: [x[i].mean()], len(x), resamples=999, seed=7)
    other = bootstrap_percentile(lambda i: [x[i].mean()], len(x), resamples=999, seed=8)
    assert np.array_equal(ours.samples, again.samples) and not np.array_equal(ours.samples, other.samples)
    assert ours.samples.shape == (999, 1) and ours.lo[0] < x.mean() < ours.hi[0]


def test_bootstrap_of_a_vector_statistic():
    """Two columns, one constant: its interval collapses; the other brackets its estimate."""
    data = np.stack([np.linspace(0, 1, 10), np.full(10, 4.0)], 1)
    boot = bootstrap_percentile(lambda i: data[i].mean(0), 10, resamples=200, seed=0)
    assert boot.samples.shape == (200, 2)
    assert boot.lo[1] == boot.hi[1] == 4.0 and boot.lo[0] < 0.5 < boot.hi[0]
