"""Warm-started posterior sampling (SDEdit-style, MSDM's "Demucs + Gibbs"): the samplers start from an estimate
noised to a level S and run only the part of their schedule at or below S."""

import pytest
import torch

from mgdm_audio.audio.separation import SumOfStems
from mgdm_audio.core.denoiser import VEDenoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.core.schedules import NoiseLevels
from mgdm_audio.samplers.base import WarmStart
from mgdm_audio.samplers.msdm import msdm_sigmas
from mgdm_audio.samplers.pnpdm import prior_grid, prior_levels, rho_schedule
from mgdm_audio.samplers.registry import SAMPLER_MODULES, get_sampler, sampler_names
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
    assert warm_samplers() == sampler_names()  # every built-in sampler


@pytest.mark.parametrize("sampler", sampler_names())
def test_sigma_at_the_top_keeps_the_cold_schedule(sampler):
    _, cold = _run(sampler, None)
    _, warm = _run(sampler, 1e6)
    assert warm.nfe == cold.nfe > 3 and warm.vjp == cold.vjp
    if sampler == "mgdm":
        assert len(warm.info["tau"]) == len(cold.info["tau"])


@pytest.mark.parametrize(
    ("sampler", "tol"),
    [
        *[(name, 0.03) for name in ("mgdm", "msdm", "ddim", "dps", "pigdm", "vml_map", "ddrm", "pnpdm")],
        ("daps", 0.08),
        ("reddiff", 0.12),
    ],
)
def test_a_tiny_sigma_stays_at_the_estimate(sampler, tol):
    _, warm = _run(sampler, 1e-6)
    _, cold = _run(sampler, None)
    assert warm.nfe <= cold.nfe / 6  # the smallest positive level only
    # the noise of the smallest level is what remains (sigma 0.01 to 0.03 on these grids; DAPS's fast preset: 0.1);
    # RED-diff adds no noise but its one Adam step moves each element by up to lr = 0.1
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


def test_nfe_of_the_spectral_variational_and_split_gibbs_samplers():
    for name in ("ddrm", "reddiff"):  # N - 1 NFE cold over the grid ts; each skipped level saves one
        run, cold = _run(name, None)
        n = run.config.n_steps
        sigmas = LEVELS.sigmas[LEVELS.timesteps(n).flip(0)]
        _, warm = _run(name, float(sigmas[6]) * 1.001)  # just above level 6: levels 0..5 are skipped
        assert cold.nfe == n - 1 and warm.nfe == n - 1 - 6
    run, cold = _run("pnpdm", None)  # PnP-DM: the prior steps of the couplings run
    rhos, grid = rho_schedule(run.config), prior_grid(_prior(), run.config)
    _, warm = _run("pnpdm", rhos[5])
    assert warm.info["rho"] == rhos[5:] and cold.info["rho"] == rhos
    assert warm.nfe == sum(len(prior_levels(_prior(), grid, r, run.config.grid_start)) for r in rhos[5:]) < cold.nfe


# The Gaussian closed-form testbed of the DDRM and RED-diff tests: prior N(m, I) in 4 dimensions, 2 observations.
G_MEAN = torch.tensor([[1.0, -2.0, 3.0, 0.5]], dtype=torch.float64)
G_A = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
G_Y = torch.tensor([[2.0, -4.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    ("sampler", "settings", "sigma", "sigma_y"),
    [
        ("ddrm", {"n_steps": 100}, 0.2, 0.3),
        ("pnpdm", {"n_iters": 20, "rho_decay": 0.9 ** (99 / 20), "rho_min": 0.05, "prior_steps": 10}, 0.2, 0.3),
        # RED-diff's data term ignores sigma_y: its fixed point is the sigma_y -> 0 posterior mean (its own tests), so
        # the testbed's observation is made nearly noiseless for the two to agree
        ("reddiff", {"n_steps": 100}, 0.2, 0.05),
    ],
)
def test_a_warm_start_at_the_posterior_mean_stays_there(sampler, settings, sigma, sigma_y):
    """Started from the exact posterior mean at a small level S (a few levels run), the chains' mean stays within
    4 standard errors + 0.02 of it; the same run started from 0 (as a start that ignores the estimate would be)
    ends far from it."""
    prior = GaussianMixture(G_MEAN, torch.zeros(1, dtype=torch.float64), var=1.0)
    problem = InverseProblem(MatrixOperator(G_A), G_Y, sigma_y)
    post = prior.posterior(G_A, G_Y[0], sigma_y).means[0]
    spec = get_sampler(sampler)

    def mean_error(estimate: torch.Tensor) -> tuple[float, float, int]:
        x_init = torch.randn(400, 4, generator=make_generator(0), dtype=torch.float64)
        result = spec.run(
            prior.denoiser(),
            problem,
            x_init,
            generator=make_generator(1),
            config=spec.config(**settings),
            warm=WarmStart(estimate[None], sigma),
        )
        error = (result.samples.mean(0) - post).abs()
        se = result.samples.std(0) / 20.0  # sqrt(400) chains
        return float((error - 4 * se).max()), float(error.max()), result.nfe

    excess, _, nfe = mean_error(post)
    cold_nfe = spec.run(
        prior.denoiser(), problem, torch.zeros(2, 4, dtype=torch.float64), config=spec.config(**settings)
    ).nfe
    assert excess < 0.02 and 0 < nfe < cold_nfe / 2
    _, far, _ = mean_error(torch.zeros(4, dtype=torch.float64))
    assert far > 0.4


def test_warm_start_errors(monkeypatch):
    monkeypatch.setitem(SAMPLER_MODULES, "one_step", "tests.toy_sampler")  # a plug-in that declares no warm start
    with pytest.raises(UserInputError, match="no warm start"):
        _run("one_step", 0.1)
    with pytest.raises(UserInputError, match="positive"):
        _run("mgdm", 0.0)
    run = resolve(RunSpec("mgdm", "fast"), "audio")
    with pytest.raises(UserInputError, match="estimate has shape"):
        run_posterior(_prior(), _problem(), run, 2, 0, x_shape=(S, T), warm=WarmStart(torch.zeros(3, S, T), 0.1))
