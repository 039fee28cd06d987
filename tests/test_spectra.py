"""The stationary-Gaussian view of the stems (`mgdm_audio.audio.spectra`) against closed forms: Welch scaling,
prior draws with the asked-for spectra, and the exact posterior of the stems given their sum (mean and samples)."""

import pytest
import torch

from mgdm_audio.audio.spectra import (
    stationary_gaussian_sample,
    welch_psd,
    wiener_posterior_sample,
    wiener_separation,
)
from mgdm_audio.core.errors import UserInputError

BINS = 65


def _lowpass_highpass_psd(cut: int = 20) -> torch.Tensor:
    """Two stems on disjoint bands (bins below / above ``cut``) with a -120 dB floor elsewhere."""
    psd = torch.full((2, BINS), 1e-12, dtype=torch.float64)
    psd[0, :cut] = 1.0
    psd[1, cut + 4 :] = 0.5
    return psd


def test_prior_draws_have_the_asked_for_spectra() -> None:
    psd = _lowpass_highpass_psd()
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([stationary_gaussian_sample(psd, 4096, g, pad=256) for _ in range(16)])
    estimate = welch_psd(draws, BINS)
    # Welch with a Hann window leaks a little across the band edges: compare inside the bands
    assert torch.allclose(estimate[0, 2:16], psd[0, 2:16], rtol=0.15)
    assert torch.allclose(estimate[1, 28:-2], psd[1, 28:-2], rtol=0.15)
    assert float(estimate[0, 30:].max()) < 1e-3 and float(estimate[1, :14].max()) < 1e-3


def test_posterior_samples_sum_to_the_mix_and_average_to_the_wiener_mean() -> None:
    g = torch.Generator().manual_seed(1)
    psd = torch.stack([torch.linspace(2.0, 0.1, BINS), torch.linspace(0.1, 1.0, BINS)]).double()
    mix = stationary_gaussian_sample(psd, 2048, g, pad=128).sum(0)
    mean = wiener_separation(mix, psd, pad=128)
    draws = torch.stack([wiener_posterior_sample(mix, psd, g, pad=128) for _ in range(400)])
    assert torch.allclose(draws.sum(1), mix.expand(400, -1), atol=1e-9)  # every draw explains the mix exactly
    # Monte-Carlo mean within a few standard errors of the closed form
    se = draws.std(0) / 20.0
    assert float(((draws.mean(0) - mean).abs() / se).mean()) < 1.2


def test_posterior_variance_matches_the_closed_form_for_white_stems() -> None:
    """Two white stems of variances a and b: s_1 | (s_1 + s_2 = m) ~ N(a m / (a + b), a b / (a + b)) per sample."""
    a, b = 1.0, 3.0
    psd = torch.tensor([[a] * BINS, [b] * BINS], dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    mix = torch.randn(4096, generator=g, dtype=torch.float64) * (a + b) ** 0.5
    draws = torch.stack([wiener_posterior_sample(mix, psd, g, pad=64) for _ in range(8)])
    residual = draws[:, 0] - a / (a + b) * mix
    assert abs(float(residual.mean())) < 0.02
    assert abs(float(residual.var()) - a * b / (a + b)) < 0.03 * a * b / (a + b)


def test_disjoint_bands_leave_no_posterior_uncertainty() -> None:
    psd = _lowpass_highpass_psd()
    g = torch.Generator().manual_seed(3)
    mix = stationary_gaussian_sample(psd, 4096, g, pad=256).sum(0)
    mean = wiener_separation(mix, psd, pad=256)
    draw = wiener_posterior_sample(mix, psd, g, pad=256)
    # away from the ends (where reflect padding bends the band-limited signal) the draw is the mean
    inner = slice(300, -300)
    assert float((draw - mean)[:, inner].pow(2).mean()) < 1e-4 * float(mean.pow(2).mean())
    assert float((draw - mean).pow(2).mean()) < 1e-2 * float(mean.pow(2).mean())


def test_gaussian_stem_denoiser_is_the_closed_form_wiener_filter() -> None:
    """White stems of variance a: D(x, sigma) = a / (a + sigma^2) x, for every sigma of a batch."""
    from mgdm_audio.audio.gaussian_prior import GaussianStemDenoiser
    from mgdm_audio.audio.model import get_config
    from mgdm_audio.core.edm import EDMConfig

    a = torch.tensor([0.04, 0.01])
    denoiser = GaussianStemDenoiser(a[:, None].expand(2, BINS).clone(), EDMConfig(), get_config("tiny"), pad=32)
    x = torch.randn(3, 2, 256, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([0.01, 0.1, 1.0])
    expected = a[None, :, None] / (a[None, :, None] + sigma[:, None, None] ** 2) * x
    assert torch.allclose(denoiser(x, sigma), expected, atol=1e-5)
    assert denoiser.levels.sigmas.shape[0] > 1  # the index-based samplers' table is there


def test_gaussian_stem_prior_stands_in_for_a_trained_prior() -> None:
    """Same stems, rate, chunk, metadata, noise levels and length rule as the prior it replaces; through the
    Separator it splits a mix of tones into the stems whose (disjoint) bands hold them."""
    import math
    from pathlib import Path

    from mgdm_audio.audio.gaussian_prior import gaussian_stem_prior
    from mgdm_audio.audio.model import build_prior
    from mgdm_audio.audio.priors import AudioPrior
    from mgdm_audio.audio.separator import Separator

    module = build_prior("tiny")
    stems = tuple(f"s{k}" for k in range(module.unet_config.stems))
    like = AudioPrior(module, stems, 8000, 1024, {"metadata": {"mix_rms": 0.1}}, "x", Path("tiny"))
    psd = torch.full((len(stems), BINS), 1e-8)
    for k in range(len(stems)):  # stem k owns bins [16 k, 16 k + 16): 0-1000 Hz, 1000-2000 Hz, ...
        psd[k, 16 * k : 16 * k + 16] = 0.01
    prior = gaussian_stem_prior(psd, like)
    assert prior.stems == like.stems and prior.downsampling == like.downsampling
    assert torch.equal(prior.levels.sigmas, like.levels.sigmas) and len(prior.weights_sha256) == 64
    assert prior.config["metadata"]["mix_rms"] == 0.1
    t = torch.arange(3000) / 8000
    tones = torch.stack([0.1 * torch.sin(2 * math.pi * (500 + 1000 * k) * t) for k in range(len(stems))])
    result = Separator(prior, sampler="pigdm", preset="fast", seed=0).separate_tensor(tones.sum(0), 8000)
    assert result.stems.shape == (len(stems), 1, tones.shape[-1])  # (S, C, T): a mono input at the prior's rate
    inner = slice(500, -500)  # away from the ends, where reflect padding and the first chunk's start blur the tones
    error = (result.stems[:, 0] - tones)[:, inner].pow(2).mean(-1) / tones[:, inner].pow(2).mean(-1)
    assert float(error.max()) < 0.05, error


def test_generation_from_the_gaussian_stem_prior_has_its_spectra() -> None:
    """Unconditional DDIM generation with the exact denoiser of a Gaussian prior reproduces the prior's spectra:
    a check of the generation sampler with no network in the way (a low-pass and a high-pass stem)."""
    from pathlib import Path

    from mgdm_audio.audio.gaussian_prior import gaussian_stem_prior
    from mgdm_audio.audio.model import build_prior
    from mgdm_audio.audio.priors import AudioPrior, generate

    module = build_prior("tiny", edm={"sigma_data": 0.1})
    stems = tuple(f"s{k}" for k in range(module.unet_config.stems))
    like = AudioPrior(module, stems, 8000, 1024, {}, "x", Path("tiny"))
    psd = torch.full((len(stems), BINS), 1e-6, dtype=torch.float64)
    psd[0::2, :16] = 0.01  # low-pass stems
    psd[1::2, 40:] = 0.004  # high-pass stems
    prior = gaussian_stem_prior(psd, like)
    for eta in (0.0, 1.0):  # deterministic DDIM (generate's default) and the ancestral sampler
        ratios = {}
        for steps in (50, 200):
            estimate = welch_psd(generate(prior, 6, 4096 / 8000, seed=0, steps=steps, eta=eta).double(), BINS)
            low, high = estimate[:, 2:14].mean(-1), estimate[:, 42:-2].mean(-1)
            assert float(low[1::2].max()) < 1e-4 and float(high[0::2].max()) < 1e-4  # nothing where the prior has none
            ratios[steps] = torch.cat([low[0::2] / 0.01, high[1::2] / 0.004])
        # coarse grids under-disperse (about 0.88 of the power at 50 steps with eta = 0, 0.77 with eta = 1, whose
        # DDPM-type steps use the posterior variance of a point mass); the error shrinks with the grid (0.94-0.98, 200)
        assert torch.allclose(ratios[200], torch.ones_like(ratios[200]), atol=0.12), (eta, ratios)
        assert float((1 - ratios[200]).abs().max()) < float((1 - ratios[50]).abs().min()), (eta, ratios)


def _operator_norm(apply, shape, iterations: int = 60) -> float:
    """Largest singular value by power iteration on ``A^T A`` for a symmetric ``A`` (``A A``)."""
    v = torch.randn(shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for _ in range(iterations):
        v = apply(apply(v))
        v = v / v.norm()
    return float(apply(v).norm())


def test_zero_and_circular_padding_give_symmetric_contractions_reflect_does_not() -> None:
    """Why the Gaussian prior filters circularly: with a gain in [0, 1], zero padding and pad = 0 give a symmetric
    operator of norm <= 1 (a denoiser a sampler may apply again and again), reflect padding does not."""
    from mgdm_audio.audio.spectra import filter_by_gain

    n = 256
    g = torch.Generator().manual_seed(7)
    gains = torch.rand(4 * n, generator=g, dtype=torch.float64)

    def gain(length: int) -> torch.Tensor:
        return gains[: length // 2 + 1]

    u, v = torch.randn(2, n, generator=g, dtype=torch.float64)
    for pad, padding in ((64, "zero"), (0, "reflect")):
        apply = lambda x, pad=pad, padding=padding: filter_by_gain(x, gain, pad, torch.float64, padding)  # noqa: E731
        assert torch.dot(apply(u), v) == pytest.approx(float(torch.dot(u, apply(v))), rel=1e-9)
        assert _operator_norm(apply, (n,)) <= 1.0 + 1e-9
    reflect = lambda x: filter_by_gain(x, gain, 64, torch.float64, "reflect")  # noqa: E731
    assert abs(float(torch.dot(reflect(u), v) - torch.dot(u, reflect(v)))) > 1e-6  # not symmetric
    with pytest.raises(UserInputError, match="padding"):
        filter_by_gain(u, gain, 8, torch.float64, "mirror")


def test_gaussian_stem_denoiser_is_a_contraction() -> None:
    from mgdm_audio.audio.gaussian_prior import GaussianStemDenoiser
    from mgdm_audio.audio.model import get_config
    from mgdm_audio.core.edm import EDMConfig

    psd = torch.full((4, BINS), 1e-8)
    for k in range(4):
        psd[k, 16 * k : 16 * k + 16] = 0.01
    denoiser = GaussianStemDenoiser(psd, EDMConfig(), get_config("tiny"))
    for sigma in (1e-3, 0.05):
        norm = _operator_norm(lambda x, s=sigma: denoiser(x.float(), s).double(), (1, 4, 1024), iterations=30)
        assert norm <= 1.0 + 1e-4
