"""PnP-DM: each Gibbs step against its closed form, the split-Gibbs chain against its exact stationary law, the
annealed sampler against the exact posterior of a Gaussian prior, cost, presets and input checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mgdm_audio.audio.separation import SumOfStems
from mgdm_audio.core.denoiser import CountingDenoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.samplers.pnpdm import (
    PnPDMConfig,
    exact_likelihood_step,
    pnpdm,
    prior_grid,
    prior_levels,
    prior_step,
    rho_schedule,
)
from mgdm_audio.samplers.registry import get_sampler
from mgdm_audio.samplers.run import RunSpec, resolve

D, SIGMA_Y = 4, 0.3


def gaussian_problem() -> tuple[GaussianMixture, Tensor, InverseProblem]:
    """A one-component mixture N(m, I) in 4 dimensions observed through a random 2 x 4 matrix."""
    g = make_generator(0)
    prior = GaussianMixture(torch.randn(1, D, generator=g, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    a = torch.randn(2, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    y = torch.randn(1, 2, generator=g, dtype=torch.float64)
    return prior, a, InverseProblem(MatrixOperator(a), y, SIGMA_Y)


def split_gibbs_marginal(prior: GaussianMixture, a: Tensor, y: Tensor, rho: float) -> tuple[Tensor, Tensor]:
    """The x-marginal of p(x) N(z; x, rho^2) g(y | z): p(x) N(y; A x, sigma_y^2 I + rho^2 A A^T) (rho = 0: the
    posterior)."""
    noise = SIGMA_Y**2 * torch.eye(a.shape[0], dtype=torch.float64) + rho**2 * a @ a.T
    cov = torch.linalg.inv(torch.eye(D, dtype=torch.float64) / prior.var + a.T @ torch.linalg.solve(noise, a))
    mean = cov @ (a.T @ torch.linalg.solve(noise, y.reshape(-1)) + prior.means[0] / prior.var)
    return mean, cov


def run(prior: GaussianMixture, problem: InverseProblem, n: int = 4000, **settings) -> tuple[Tensor, int]:
    x_init = torch.randn(n, D, generator=make_generator(1), dtype=torch.float64)
    result = pnpdm(prior.denoiser(), problem, x_init, generator=make_generator(2), config=PnPDMConfig(**settings))
    return result.samples, result.nfe


def max_mean_error(x: Tensor, mean: Tensor) -> float:
    return float((x.mean(0) - mean).abs().max())


def relative_cov_error(x: Tensor, cov: Tensor) -> float:
    return float((torch.cov(x.T) - cov).abs().max() / cov.abs().max())


def test_likelihood_step_draws_the_exact_gaussian_conditional() -> None:
    _, a, problem = gaussian_problem()
    n, rho = 20000, 0.7
    x = torch.tensor([0.5, -1.0, 0.2, 0.0], dtype=torch.float64).expand(n, D)
    z = exact_likelihood_step(problem, x, rho, make_generator(4))
    q = a.T @ a / SIGMA_Y**2 + torch.eye(D, dtype=torch.float64) / rho**2
    cov = torch.linalg.inv(q)
    mean = cov @ (a.T @ problem.y[0] / SIGMA_Y**2 + x[0] / rho**2)
    assert max_mean_error(z, mean) < 4 * math.sqrt(float(cov.diagonal().max()) / n)
    assert relative_cov_error(z, cov) < 0.04  # the mean alone (no perturbation) has zero covariance


@pytest.mark.parametrize("rho", [2.0, 0.5, 0.1])
def test_prior_step_samples_the_gaussian_denoising_posterior(rho: float) -> None:
    # For p(x) = N(m, I): p(x | z) = N(m + (z - m) / (1 + rho^2), rho^2 / (1 + rho^2) I).
    mix, _, _ = gaussian_problem()
    prior, n = CountingDenoiser(mix.denoiser()), 20000
    z = torch.full((n, D), 0.3, dtype=torch.float64)
    levels = prior_levels(prior, prior_grid(prior, PnPDMConfig()), rho, grid_start=False)
    x = prior_step(prior, z, levels, make_generator(3))
    mean = mix.means[0] + (z[0] - mix.means[0]) / (1 + rho**2)
    var = rho**2 / (1 + rho**2)
    assert prior.nfe == len(levels) and levels[0] == rho and all(s < rho for s in levels[1:])
    assert max_mean_error(x, mean) < 4 * math.sqrt(var / n) + 0.01 * rho
    assert float(x.var(0).mean()) == pytest.approx(var, rel=0.1)  # Euler-Maruyama on a 99-level grid


def test_fixed_coupling_chain_reaches_the_split_gibbs_marginal() -> None:
    # With rho_k = rho the chain's x-marginal is exactly p(x) N(y; A x, sigma_y^2 + rho^2 A A^T), which at rho = 0.5
    # is visibly not the posterior: the test tells the two apart.
    prior, a, problem = gaussian_problem()
    rho = 0.5
    x, _ = run(prior, problem, n_iters=60, rho_start=rho, rho_decay=1.0, rho_min=rho)
    mean, cov = split_gibbs_marginal(prior, a, problem.y, rho)
    post_mean, post_cov = split_gibbs_marginal(prior, a, problem.y, 0.0)
    assert max_mean_error(x, mean) < 4 * math.sqrt(float(cov.diagonal().max()) / x.shape[0])
    assert relative_cov_error(x, cov) < 0.06
    assert relative_cov_error(x, post_cov) > 0.1 or max_mean_error(x, post_mean) > 0.1


def test_annealed_pnpdm_approaches_the_exact_posterior() -> None:
    prior, a, problem = gaussian_problem()
    post = prior.posterior(a, problem.y[0], SIGMA_Y)
    x, nfe = run(prior, problem, n_iters=100, rho_min=0.1, prior_steps=50)
    assert max_mean_error(x, post.means[0]) < 0.05  # about 4 standard errors of the mean
    assert relative_cov_error(x, post.cov) < 0.06  # a likelihood step without noise, or a prior step without it: ~0.5
    schedule = rho_schedule(PnPDMConfig(n_iters=100, rho_min=0.1, prior_steps=50))
    grid = prior_grid(CountingDenoiser(prior.denoiser()), PnPDMConfig(prior_steps=50))
    assert nfe == sum(len(prior_levels(prior.denoiser(), grid, r, False)) for r in schedule)


def test_annealing_finds_the_posterior_weights_of_a_mixture() -> None:
    # Three modes with prior weights (0.2, 0.3, 0.5); the observation of x1 + x2 leaves the third with 98 % of the
    # posterior mass. Slow annealing (rate 0.95) moves the chains there; a sampler that ignored y would keep 50 %.
    means = torch.tensor([[-3.0, -3.0], [3.0, 3.0], [3.0, -3.0]], dtype=torch.float64)
    mix = GaussianMixture(means, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64).log())
    a = torch.tensor([[1.0, 1.0]], dtype=torch.float64) / math.sqrt(2)
    problem = InverseProblem(MatrixOperator(a), torch.tensor([[0.5]], dtype=torch.float64), 1.0)
    post = mix.posterior(a, problem.y[0], 1.0)
    x_init = torch.randn(4000, 2, generator=make_generator(1), dtype=torch.float64)
    config = PnPDMConfig(n_iters=200, rho_decay=0.95, rho_min=0.1, prior_steps=50)
    x = pnpdm(mix.denoiser(), problem, x_init, generator=make_generator(2), config=config).samples
    nearest = ((x[:, None, :] - post.means[None]) ** 2).sum(-1).argmin(1)
    weights = torch.bincount(nearest, minlength=3).double() / x.shape[0]
    assert float((weights - post.log_weights.exp()).abs().max()) < 0.05
    assert max_mean_error(x, post.log_weights.exp() @ post.means) < 0.15


def test_langevin_likelihood_step_approaches_the_exact_posterior_too() -> None:
    prior, a, problem = gaussian_problem()
    post = prior.posterior(a, problem.y[0], SIGMA_Y)
    settings = {"likelihood": "langevin", "langevin_lr": 2e-3, "langevin_steps": 50}
    x, _ = run(prior, problem, n=2000, n_iters=100, rho_min=0.1, prior_steps=50, **settings)
    assert max_mean_error(x, post.means[0]) < 0.1  # the unadjusted Langevin step's own bias on top
    assert relative_cov_error(x, post.cov) < 0.1


def test_schedule_and_the_reference_grid_start() -> None:
    cfg = PnPDMConfig(n_iters=5, rho_start=10.0, rho_decay=0.5, rho_min=1.0)
    assert rho_schedule(cfg) == pytest.approx([10.0, 5.0, 2.5, 1.25, 1.0])
    mix, _, _ = gaussian_problem()
    prior = mix.denoiser()
    grid = prior_grid(prior, PnPDMConfig(prior_steps=5, prior_sigma_max=16.0, prior_sigma_min=1.0))
    assert grid == pytest.approx([16.0, 8.0, 4.0, 2.0, 1.0])
    assert prior_levels(prior, grid, 5.0, grid_start=False) == pytest.approx([5.0, 4.0, 2.0, 1.0])
    assert prior_levels(prior, grid, 5.0, grid_start=True) == pytest.approx([4.0, 2.0, 1.0])
    assert prior_levels(prior, grid, 0.5, grid_start=True) == []  # the reference: the identity below the grid
    assert prior_levels(prior, grid, 0.5, grid_start=False) == pytest.approx([0.5])
    assert prior_levels(prior, grid, 50.0, grid_start=False)[0] == 16.0  # clipped to the grid's (prior's) top


def test_seeded_runs_repeat_and_presets_resolve() -> None:
    prior, _, problem = gaussian_problem()
    a, _ = run(prior, problem, n=8, n_iters=5, prior_steps=5)
    b, _ = run(prior, problem, n=8, n_iters=5, prior_steps=5)
    assert torch.equal(a, b)
    spec = get_sampler("pnpdm")
    assert resolve(RunSpec("pnpdm", "fast"), "audio").sampler_preset == "audio-fast"
    assert resolve(RunSpec("pnpdm", "paper"), "audio").config.likelihood == "langevin"
    assert resolve(RunSpec("pnpdm", "paper"), "image").sampler_preset == "paper-image"
    fast = spec.config("audio-fast")
    assert fast.n_iters == 20 and fast.rho_decay**20 == pytest.approx(0.9**99)


def test_audio_fast_runs_on_the_mixture_with_the_exact_step() -> None:
    from tests.audio_priors_for_tests import BandPrior

    prior, t = BandPrior(sample_rate=8000, chunk_samples=1024), 1024
    y = 0.1 * torch.randn(2, 1, t, generator=make_generator(5))
    problem = InverseProblem(SumOfStems(4, t), y, 1e-4)
    spec = get_sampler("pnpdm")
    x_init = torch.randn(2, 4, t, generator=make_generator(6))
    result = spec.run(prior, problem, x_init, generator=make_generator(7), config=spec.config("audio-fast"))
    assert result.info["likelihood"] == "exact" and result.vjp == 0 and 0 < result.nfe <= 100
    assert float((result.samples.sum(1, keepdim=True) - y).norm()) < 0.5 * float(y.norm())
    # the reference's grid start makes the last prior steps (rho below the grid) the identity: the output is then the
    # last likelihood step's z, whose mixture matches y to sigma_y / 2 per sample (the mixture's singular value 2)
    config = spec.config("audio-fast", grid_start=True)
    z = spec.run(prior, problem, x_init, generator=make_generator(7), config=config).samples
    assert float((z.sum(1, keepdim=True) - y).abs().max()) < 6 * 1e-4
    # the reference's audio setting (Langevin likelihood step, 1e-9 x 100), shortened: near the projection as well
    config = spec.config("paper-audio", n_iters=10, rho_decay=0.9**10, prior_steps=10, grid_start=True)
    result = spec.run(prior, problem, x_init, generator=make_generator(7), config=config)
    assert result.info["likelihood"] == "langevin" and result.vjp == 0
    assert float((result.samples.sum(1, keepdim=True) - y).abs().max()) < 1e-3


def test_bad_settings_are_one_clear_error() -> None:
    prior, _, problem = gaussian_problem()
    for bad in ({"rho_decay": 1.5}, {"rho_min": 0.0}, {"n_iters": 0}, {"likelihood": "mcmc"}):
        with pytest.raises(UserInputError, match="PnP-DM"):
            run(prior, problem, n=2, **bad)
    with pytest.raises(UserInputError, match="prior grid"):
        run(prior, problem, n=2, prior_sigma_max=1e6, prior_sigma_min=1e5)
