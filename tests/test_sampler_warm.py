"""Warm-started posterior sampling (SDEdit-style, MSDM's "Demucs + Gibbs"): the samplers start from an estimate
noised to a level S and run only the part of their schedule at or below S."""

import pytest
import torch

from mgdm_audio.audio.separation import SumOfStems
from mgdm_audio.core.denoiser import VEDenoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.schedules import NoiseLevels
from mgdm_audio.samplers.base import WarmStart
from mgdm_audio.samplers.msdm import msdm_sigmas
from mgdm_audio.samplers.run import RunSpec, resolve, run_posterior, warm_samplers

S, T, CHAINS = 4, 3, 5
MEANS = torch.tensor([0.8, -0.4, 0.2, 0.0], dtype=torch.float64)
LEVELS = NoiseLevels.karras(5e-4, 20.0, rho=3.0)  # the audio prior's table


def _prior():
    """Independent N(m_s, 0.25) stems: one Gaussian component in dimension S*T, on the audio table."""
    mix = GaussianMixture(MEANS[:, None].expand(S, T).reshape(1, -1).clone(), torch.zeros(1, dtype=torch.float64), 0.25)
    return VEDenoiser(mix.denoise, LEVELS)


def _problem():
    return InverseProblem(SumOfStems(S, T), torch.full((1, 1, T), 0.7), 1e-2)


ESTIMATE = torch.tensor([0.5, -0.1, 0.4, -0.1])[:, None].expand(S, T)[None].clone()  # sums to the mixture 0.7


def _run(sampler: str, sigma: float | None, preset: str = "fast"):
    run = resolve(RunSpec(sampler, preset), "audio")
    warm = None if sigma is None else WarmStart(ESTIMATE, sigma)
    return run, run_posterior(_prior(), _problem(), run, CHAINS, 3, x_shape=(S, T), warm=warm)


def test_the_samplers_that_can_be_warm_started():
    assert warm_samplers() == ["mgdm", "vml_map", "dps", "pigdm", "diffpir", "daps", "ddim", "msdm"]


@pytest.mark.parametrize("sampler", ["mgdm", "msdm", "ddim", "dps", "diffpir", "pigdm", "daps", "vml_map"])
def test_sigma_at_the_top_keeps_the_cold_schedule(sampler):
    _, cold = _run(sampler, None)
    _, warm = _run(sampler, 1e6)
    assert warm.nfe == cold.nfe > 3 and warm.vjp == cold.vjp
    if sampler == "mgdm":
        assert len(warm.info["tau"]) == len(cold.info["tau"])


@pytest.mark.parametrize(
    ("sampler", "tol"),
    [("mgdm", 0.03), ("msdm", 0.03), ("ddim", 0.03), ("dps", 0.03), ("pigdm", 0.03), ("vml_map", 0.03), ("daps", 0.08)],
)
def test_a_tiny_sigma_stays_at_the_estimate(sampler, tol):
    _, warm = _run(sampler, 1e-6)
    _, cold = _run(sampler, None)
    assert warm.nfe <= cold.nfe / 6  # the smallest positive level only
    # the noise of the smallest level is what remains (sigma 0.01 to 0.03 on these grids; DAPS's fast preset: 0.1)
    assert float((warm.samples.float() - ESTIMATE).abs().mean()) < tol
    assert float((cold.samples.float() - ESTIMATE).abs().mean()) > 0.1  # the cold start does not land there


def test_nfe_counts_only_the_steps_run():
    run, cold = _run("ddim", None)
    n = run.config.n_steps  # DDIM: n - 1 NFE cold; each skipped level saves one
    sigmas = LEVELS.sigmas[LEVELS.timesteps(n).flip(0)]
    sigma = float(sigmas[5])  # levels 0..4 (the largest five) are above it
    _, warm = _run("ddim", sigma)
    assert cold.nfe == n - 1 and warm.nfe == n - 1 - 5
    run, cold = _run("msdm", None)  # MSDM: R NFE per level
    cfg = run.config
    grid = msdm_sigmas(cfg)
    _, warm = _run("msdm", float(grid[7]))
    assert cold.nfe == cfg.n_steps * cfg.n_resamples and warm.nfe == (cfg.n_steps - 7) * cfg.n_resamples
    run, cold = _run("mgdm", None)
    sigmas = LEVELS.sigmas[LEVELS.timesteps(run.config.n_steps).flip(0)]
    _, warm = _run("mgdm", float(sigmas[4]) * 1.001)  # between two levels: the next one below starts
    assert len(warm.info["tau"]) == len(cold.info["tau"]) - 4 and 0 < warm.nfe < cold.nfe


def test_warm_start_errors():
    with pytest.raises(UserInputError, match="no warm start"):
        _run("ddrm", 0.1)
    with pytest.raises(UserInputError, match="positive"):
        _run("mgdm", 0.0)
    run = resolve(RunSpec("mgdm", "fast"), "audio")
    with pytest.raises(UserInputError, match="estimate has shape"):
        run_posterior(_prior(), _problem(), run, 2, 0, x_shape=(S, T), warm=WarmStart(torch.zeros(3, S, T), 0.1))
