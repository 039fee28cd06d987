"""The multi-stem prior network and its EDM preconditioning (mgdm_audio.audio.model)."""

from __future__ import annotations

import math

import pytest
import torch

from mgdm_audio.audio.model import (
    CONFIGS,
    EDMPrior,
    build_prior,
    count_parameters,
    edm_coefficients,
)
from mgdm_audio.core.denoiser import Denoiser
from mgdm_audio.core.errors import UserInputError


def _tiny_with_random_output(seed: int = 0, **edm: object) -> EDMPrior:
    torch.manual_seed(seed)
    prior = build_prior("tiny", edm=dict(edm))
    torch.nn.init.normal_(prior.net.patch_out.weight, std=0.3)  # the output conv starts at zero: make F non-trivial
    return prior.eval()


def test_edm_coefficients_closed_forms() -> None:
    sigma = torch.tensor([1e-4, 0.05, 0.2, 1.0, 20.0], dtype=torch.float64)
    d = 0.2
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, d)
    torch.testing.assert_close(c_in**2 * (sigma**2 + d**2), torch.ones_like(sigma))
    torch.testing.assert_close(c_skip + c_out**2 / d**2, torch.ones_like(sigma))  # unit-variance target
    torch.testing.assert_close(c_out, sigma * d * c_in)
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # loss weight = 1 / c_out^2
    prior = build_prior("tiny")
    torch.testing.assert_close(prior.loss_weight(sigma), 1 / c_out**2)


def test_denoiser_tends_to_identity_as_sigma_vanishes() -> None:
    prior = _tiny_with_random_output()
    x = 0.9 * torch.rand(2, 4, 64, generator=torch.Generator().manual_seed(1)) - 0.45
    with torch.no_grad():
        err = [float((prior(x, s) - x).abs().max()) for s in (1e-2, 1e-4, 1e-6)]
        far = float((prior(x, 5.0) - x).abs().max())
    assert err[0] > err[1] > err[2] and err[2] < 1e-5
    assert far > 1e-2  # the network does act at large sigma


def test_clamp_flag() -> None:
    x = 3.0 * torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        clamped = _tiny_with_random_output(clamp_output=True)(x, 1e-3)
        free = _tiny_with_random_output(clamp_output=False)(x, 1e-3)
    assert float(clamped.abs().max()) <= 1.0
    assert float(free.abs().max()) > 2.0


def test_length_and_shape_errors() -> None:
    prior = build_prior("tiny")
    with pytest.raises(UserInputError, match="multiple of 16"):
        prior(torch.zeros(1, 4, 100), 1.0)
    with pytest.raises(UserInputError, match=r"\(B, 4, T\)"):
        prior(torch.zeros(1, 3, 64), 1.0)
    with pytest.raises(UserInputError, match="unknown model config"):
        build_prior("huge")


def test_tiny_forward_shape_determinism_and_protocol() -> None:
    a, b = _tiny_with_random_output(7), _tiny_with_random_output(7)
    assert count_parameters(a) < 100_000
    assert isinstance(a, Denoiser)
    x = 0.1 * torch.randn(3, 4, 128, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([0.01, 0.3, 4.0])
    with torch.no_grad():
        out = a(x, sigma)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert torch.equal(out, b(x, sigma))
        # per-chain sigma equals three separate scalar calls (GroupNorm is per item)
        for i in range(3):
            torch.testing.assert_close(out[i : i + 1], a(x[i : i + 1], float(sigma[i])), atol=1e-6, rtol=1e-5)


def test_noise_levels_table() -> None:
    levels = build_prior("tiny").levels
    assert levels.T == 1000
    assert math.isclose(levels.sigma_min, 1e-4, rel_tol=1e-9) and math.isclose(levels.sigma_max, 20.0, rel_tol=1e-9)
    assert float(levels.abar[-1]) == pytest.approx(1 / 401)


def test_small_config_runs() -> None:
    prior = build_prior("small")
    assert 3_000_000 < count_parameters(prior) < 10_000_000
    x = torch.zeros(1, 4, CONFIGS["small"].downsampling * 2)
    with torch.no_grad():
        assert prior(x, 0.5).shape == x.shape


# ------------------------------------------------------------------------------------------ spectral skip


def _spectral_prior(**skip: int):
    from mgdm_audio.audio.model import SpectralSkipConfig, build_prior

    torch.manual_seed(0)
    prior = build_prior("tiny", edm={"sigma_data": 0.1}, spectral_skip=dict(SpectralSkipConfig(**skip).to_dict()))
    plain = build_prior("tiny", edm={"sigma_data": 0.1})
    plain.load_state_dict({k: v for k, v in prior.state_dict().items() if not k.startswith("spectral.")})
    return prior.eval(), plain.eval()


def test_spectral_skip_with_a_flat_psd_is_edm_c_skip() -> None:
    prior, plain = _spectral_prior(bins=65, pad=32)
    x = 0.1 * torch.randn(3, 4, 256, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([1e-3, 0.1, 5.0])
    with torch.no_grad():
        torch.testing.assert_close(prior(x, sigma), plain(x, sigma), atol=1e-6, rtol=0)


def test_spectral_skip_fit_recovers_white_and_lowpass_spectra() -> None:
    from mgdm_audio.audio.model import SpectralSkip, SpectralSkipConfig

    skip = SpectralSkip(2, 0.1, SpectralSkipConfig(bins=33, pad=16))
    g = torch.Generator().manual_seed(2)
    white = 0.3 * torch.randn(64, 1, 2048, generator=g)
    lowpass = torch.nn.functional.avg_pool1d(torch.randn(64, 1, 2048 + 7, generator=g), 8, stride=1)  # var 1/8
    skip.fit(torch.cat([white, lowpass], dim=1))
    assert abs(float(skip.psd[0].mean()) / 0.09 - 1) < 0.05 and float(skip.psd[0].std() / skip.psd[0].mean()) < 0.1
    assert float(skip.psd[1, :4].mean()) > 30 * float(skip.psd[1, 20:].mean())  # a box filter's sidelobes: ~1 %
    assert abs(float(skip.psd[1].mean()) / (1 / 8) - 1) < 0.1  # Parseval: mean PSD = variance
    with pytest.raises(UserInputError, match="spectral skip"):
        skip.fit(torch.zeros(4, 3, 2048))


def test_fitted_spectral_skip_is_a_better_denoiser_than_c_skip_on_coloured_data() -> None:
    """For stationary Gaussian data the Wiener filter is the MMSE denoiser; c_skip is the white-data special case."""
    prior, plain = _spectral_prior(bins=65, pad=64)
    g = torch.Generator().manual_seed(3)
    coloured = torch.nn.functional.avg_pool1d(0.2 * torch.randn(96, 4, 512 + 15, generator=g), 16, stride=1)
    prior.spectral.fit(coloured[:64])
    x0 = coloured[64:]
    sigma = torch.full((32,), 0.05)
    x = x0 + sigma[0] * torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        wiener = prior.spectral(x, sigma)
        scalar = (0.1**2 / (0.1**2 + 0.05**2)) * x  # EDM's c_skip x with sigma_data = 0.1
    mse_w, mse_s, mse_x = ((wiener - x0) ** 2).mean(), ((scalar - x0) ** 2).mean(), ((x - x0) ** 2).mean()
    assert mse_w < 0.3 * mse_s and mse_w < 0.3 * mse_x
