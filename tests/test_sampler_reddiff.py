"""RED-diff: cost, determinism, start point, the own-schedule quirk, the closed-form limit on a Gaussian
prior, and the GMM sanity check."""

from __future__ import annotations

import math

import pytest
import torch

from mgdm_audio.core.denoiser import VEDenoiser
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.core.schedules import NoiseLevels, linear_beta_alphas_cumprod
from mgdm_audio.samplers.reddiff import SPEC, REDDiffConfig, reddiff
from mgdm_audio.samplers.registry import get_sampler
from tests.operators_for_tests import Cubic, NoSVDMatrix, sw_to_posterior_and_prior_sw

MEAN = torch.tensor([[1.0, -2.0, 3.0, 0.5]], dtype=torch.float64)
A = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
Y = torch.tensor([[2.0, -4.0]], dtype=torch.float64)


def gaussian() -> GaussianMixture:
    return GaussianMixture(MEAN, torch.zeros(1, dtype=torch.float64), var=1.0)


def run(problem: InverseProblem, n: int, seed: int = 0, prior=None, **cfg: object):
    x_init = torch.randn(n, MEAN.shape[1], generator=make_generator(seed), dtype=torch.float64)
    den = gaussian().denoiser() if prior is None else prior
    return reddiff(den, problem, x_init, generator=make_generator(seed + 1), config=REDDiffConfig(**cfg))


def test_registry_and_presets() -> None:
    assert get_sampler("reddiff") is SPEC
    cfg = SPEC.config()
    assert (cfg.n_steps, cfg.lr, cfg.betas, cfg.grad_weight, cfg.obs_weight, cfg.own_schedule) == (
        1000,
        0.1,
        (0.9, 0.99),
        0.25,
        1.0,
        True,
    )
    assert SPEC.config("fast").n_steps == 100 and SPEC.config("paper-audio") == cfg
    assert not SPEC.needs_linear and not SPEC.needs_svd


@pytest.mark.parametrize("operator", ["svd", "nosvd", "nonlinear"])
def test_cost_formula(operator: str) -> None:
    """N - 1 NFE; the backward pass only reaches the operator, never the denoiser (0 VJP)."""
    op = {"svd": MatrixOperator(A), "nosvd": NoSVDMatrix(A), "nonlinear": Cubic(A)}[operator]
    res = run(InverseProblem(op, Y, 0.3), 3, n_steps=25)
    assert (res.nfe, res.vjp) == (24, 0)
    assert torch.all(torch.isfinite(res.samples))


def test_same_seed_same_samples() -> None:
    problem = InverseProblem(MatrixOperator(A), Y, 0.3)
    assert torch.equal(run(problem, 4, n_steps=20).samples, run(problem, 4, n_steps=20).samples)
    assert not torch.equal(run(problem, 4, n_steps=20).samples, run(problem, 4, seed=5, n_steps=20).samples)


def test_start_point_and_sigma_y_unused() -> None:
    """With SVD pieces every chain starts at A^+ y (x_init is irrelevant); without them the start is x_init.
    sigma_y never enters (reference behaviour)."""
    svd = InverseProblem(MatrixOperator(A), Y, 0.3)
    x1 = torch.randn(3, 4, generator=make_generator(1), dtype=torch.float64)
    x2 = torch.randn(3, 4, generator=make_generator(2), dtype=torch.float64)

    def go(problem: InverseProblem, x_init: torch.Tensor) -> torch.Tensor:
        cfg = REDDiffConfig(n_steps=10)
        return reddiff(gaussian().denoiser(), problem, x_init, generator=make_generator(9), config=cfg).samples

    assert torch.equal(go(svd, x1), go(svd, x2))
    nosvd = InverseProblem(NoSVDMatrix(A), Y, 0.3)
    assert not torch.allclose(go(nosvd, x1), go(nosvd, x2))
    assert torch.equal(go(svd, x1), go(InverseProblem(MatrixOperator(A), Y, 2.0), x1))


@pytest.mark.parametrize("own_schedule", [True, False])
def test_own_schedule_sets_the_noisy_state(own_schedule: bool) -> None:
    """First iteration (k = T - 1): x_k = sqrt(alpha_k) mu0 + sqrt(1 - alpha_k) eps with alpha from RED-diff's
    linear schedule (quirk) or the prior's table, while the prior is always called at its own sigma_k."""
    levels = NoiseLevels.karras(0.002, 5.0, n=1000)  # abar_999 ~ 0.04, far from the DDPM schedule's 4e-5
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    mix = gaussian()

    def spy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append((x.clone(), sigma.clone()))
        return mix.denoise(x, sigma)

    n, y = 4000, torch.full((1, 4), 10.0, dtype=torch.float64)
    problem = InverseProblem(MatrixOperator(torch.eye(4, dtype=torch.float64)), y, 0.1)
    run(problem, n, prior=VEDenoiser(spy, levels), n_steps=5, own_schedule=own_schedule)
    assert len(calls) == 4
    k = levels.timesteps(5)[-1]
    x_ve, sigma = calls[0]
    torch.testing.assert_close(sigma, levels.sigmas[k].expand(n))
    alpha = float(linear_beta_alphas_cumprod(1000)[k] if own_schedule else levels.abar[k])
    x_k = x_ve * float(levels.abar[k].sqrt())
    assert torch.all((x_k.mean(0) - alpha**0.5 * 10.0).abs() < 5 * math.sqrt((1 - alpha) / n))
    assert torch.all((x_k.std(0) / (1 - alpha) ** 0.5 - 1).abs() < 5 * math.sqrt(2 / n))


@pytest.mark.parametrize("own_schedule", [True, False])
def test_each_iteration_is_one_adam_step_on_the_loss(own_schedule: bool) -> None:
    """Replays the run from the recorded denoiser calls: the noise eps is recovered from the noisy state, the
    gradient ``w_k (eps_hat - eps) / n_x - A^T (y - A mu) / n_y`` is formed by hand and fed to a fresh Adam;
    each iterate must match the sampler's (reported through the callback)."""
    mix, n_steps, B = gaussian(), 6, 3
    levels = mix.denoiser().levels
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def spy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = mix.denoise(x, sigma)
        calls.append((x.clone(), sigma.clone(), out.clone()))
        return out

    iterates: list[torch.Tensor] = []
    problem = InverseProblem(MatrixOperator(A), Y, 0.3)
    x_init = torch.randn(B, 4, generator=make_generator(0), dtype=torch.float64)
    cfg = REDDiffConfig(n_steps=n_steps, own_schedule=own_schedule)
    reddiff(
        VEDenoiser(spy, levels),
        problem,
        x_init,
        generator=make_generator(1),
        config=cfg,
        callback=lambda state: iterates.append(state["x"].clone()),
    )
    alphas = linear_beta_alphas_cumprod(1000) if own_schedule else levels.abar
    ts = levels.timesteps(n_steps)
    mu = (torch.linalg.pinv(A) @ Y[0]).expand(B, 4).clone().requires_grad_(True)
    adam = torch.optim.Adam([mu], lr=0.1, betas=(0.9, 0.99))
    for it, i in enumerate(range(n_steps - 1, 0, -1)):
        k = ts[i]
        alpha, abar = float(alphas[k]), float(levels.abar[k])
        x_ve, sigma, den = calls[it]
        eps = (x_ve * abar**0.5 - alpha**0.5 * mu.detach()) / (1 - alpha) ** 0.5
        eps_hat = (x_ve - den) / sigma[:, None]
        w = 0.25 * ((1 - alpha) / alpha) ** 0.5
        mu.grad = w * (eps_hat - eps) / 4 - (Y - mu.detach() @ A.T) @ A / 2
        adam.step()
        torch.testing.assert_close(mu.detach(), iterates[it])


@pytest.mark.parametrize("own_schedule", [True, False])
def test_gaussian_limit_is_noiseless_projection(own_schedule: bool) -> None:
    """Closed form: on the prior N(m, I) the expected regulariser gradient w_k sigma_k (mu - m) / (1 + sigma_k^2)
    pulls mu towards m while the data term (weight 1, no sigma_y) fits A mu = y, so mu ends at the sigma_y -> 0
    posterior mean m + A^+ (y - A m), not the sigma_y = 0.3 one. Tolerance: 5 standard errors + 0.05."""
    n = 400
    res = run(InverseProblem(MatrixOperator(A), Y, 0.3), n, n_steps=100, own_schedule=own_schedule)
    target = MEAN[0] + torch.linalg.pinv(A) @ (Y[0] - A @ MEAN[0])
    mean, se = res.samples.mean(0), res.samples.std(0) / math.sqrt(n)
    tol = 5 * se + 0.05
    assert torch.all((mean - target).abs() < tol)
    start = torch.linalg.pinv(A) @ Y[0]
    assert not torch.all((start - target).abs() < tol)  # it moved away from the start A^+ y
    assert not torch.all((gaussian().posterior(A, Y, 0.3).means[0] - target).abs() < tol)


def test_gmm_sliced_wasserstein_beats_prior() -> None:
    """d = 8, d_y = 1, informative observation: SW to the exact posterior is well below the prior's."""
    sw, sw_prior = sw_to_posterior_and_prior_sw(reddiff, config=SPEC.config("fast"))
    assert sw < 0.7 * sw_prior
