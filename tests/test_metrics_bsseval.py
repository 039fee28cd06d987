"""BSSEval v4 through museval: invariants with hand-computed values (a perfect and a scaled estimate, interference,
silent frames and stems) rather than a comparison of museval with itself."""

import math
import sys

import numpy as np
import pytest
import torch

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.metrics.bsseval import BSSEvalResult, median_over_tracks, require_museval

SR = 8000


def _stems(seconds: float = 2.0, n: int = 3, seed: int = 0) -> torch.Tensor:
    """Independent white Gaussian stems: nearly orthogonal, and well-conditioned for BSSEval's 512-tap projections
    (a few pure tones or sharply band-limited noise make those projections ill-conditioned)."""
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, int(seconds * SR), generator=g, dtype=torch.float64)


def test_missing_museval_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "museval", None)  # `import museval` now raises ImportError
    with pytest.raises(UserInputError, match="pip install museval"):
        require_museval()


def test_perfect_and_scaled_estimates():
    pytest.importorskip("museval")
    from mgdm_audio.metrics.bsseval import bss_eval

    x = _stems()
    perfect = bss_eval(x, x, SR)
    assert perfect.frames["sdr"].shape == (3, 2)
    assert np.all(perfect.sdr > 100)  # zero error energy: +inf, or a huge finite value from round-off
    # an estimate c * s has error (c - 1) s, all of it in the spatial-distortion term: SDR = ISR = -20 log10|1 - c|
    for c in (0.5, 0.9):
        scaled = bss_eval(x, c * x, SR)
        expected = -20 * math.log10(1 - c)
        np.testing.assert_allclose(scaled.sdr, expected, atol=1e-6)
        np.testing.assert_allclose(scaled.isr, expected, atol=1e-6)


def test_interference_from_another_stem_lowers_sir():
    pytest.importorskip("museval")
    from mgdm_audio.metrics.bsseval import bss_eval

    x = _stems()
    sirs, sdrs = [], []
    for leak in (0.03, 0.1, 0.3):
        est = x.clone()
        est[0] = x[0] + leak * x[1]
        r = bss_eval(x, est, SR)
        sirs.append(float(r.sir[0]))
        sdrs.append(float(r.sdr[0]))
        # the leak is nearly orthogonal to stem 0: SIR = 10 log10(||s0||^2 / (leak^2 ||s1||^2)) per frame
        frames = x.reshape(3, 2, SR)
        expected = float((10 * torch.log10(frames[0].pow(2).sum(-1) / (leak**2 * frames[1].pow(2).sum(-1)))).median())
        assert abs(sirs[-1] - expected) < 0.5, (leak, sirs[-1], expected)
    assert sirs[0] > sirs[1] > sirs[2] and sdrs[0] > sdrs[1] > sdrs[2]


def test_silent_frames_are_nan_and_ignored_by_the_median():
    pytest.importorskip("museval")
    from mgdm_audio.metrics.bsseval import bss_eval

    x = _stems(seconds=3.0)
    g = torch.Generator().manual_seed(0)
    est = x + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    x[2, :SR] = 0.0  # stem 2 silent in the first 1 s frame: museval makes that frame NaN for every stem
    r = bss_eval(x, est, SR)
    assert r.frames["sdr"].shape == (3, 3)
    assert np.all(np.isnan(r.frames["sdr"][:, 0])) and np.all(np.isfinite(r.frames["sdr"][:, 1:]))
    np.testing.assert_allclose(r.sdr, np.median(r.frames["sdr"][:, 1:], axis=1))
    # a silent estimate frame is NaN too
    est2 = x.clone()
    est2[0, 2 * SR :] = 0.0
    x2 = _stems(seconds=3.0)
    r2 = bss_eval(x2, torch.where(est2 == 0, est2, x2 * 0.5), SR)
    assert np.all(np.isnan(r2.frames["sdr"][:, 2])) and np.all(np.isfinite(r2.frames["sdr"][:, 1]))


def test_all_zero_reference_stem_scores_nan_and_the_others_are_scored():
    pytest.importorskip("museval")
    from mgdm_audio.metrics.bsseval import bss_eval

    x = _stems(seconds=1.0, n=4)
    x[3] = 0.0
    r = bss_eval(x, 0.5 * x, SR)
    assert math.isnan(r.sdr[3]) and np.allclose(r.sdr[:3], -20 * math.log10(0.5), atol=1e-6)
    x[1:] = 0.0
    assert np.all(np.isnan(bss_eval(x, x, SR).sdr))  # fewer than two non-silent references


def test_median_over_tracks_ignores_nan_tracks():
    def result(values):
        v = np.asarray(values, dtype=float)
        return BSSEvalResult(sdr=v, sir=v + 1, sar=v + 2, isr=v + 3, frames={})

    agg = median_over_tracks([result([1.0, np.nan]), result([3.0, 5.0]), result([10.0, 7.0])])
    np.testing.assert_allclose(agg["sdr"], [3.0, 6.0])
    np.testing.assert_allclose(agg["isr"], [6.0, 9.0])
    with pytest.raises(ValueError):
        median_over_tracks([])
