"""DDRM: cost, determinism, requirements, an exact mean recursion and the exact posterior on Gaussians,
an exactly solvable identity-operator case, and the GMM sanity check."""

from __future__ import annotations

import math

import pytest
import torch

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.samplers.base import WarmStart
from mgdm_audio.samplers.ddrm import SPEC, DDRMConfig, ddrm
from mgdm_audio.samplers.registry import get_sampler
from tests.operators_for_tests import NoSVDMatrix, sw_to_posterior_and_prior_sw

MEAN = torch.tensor([[1.0, -2.0, 3.0, 0.5]], dtype=torch.float64)
A = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
Y = torch.tensor([[2.0, -4.0]], dtype=torch.float64)


def gaussian() -> GaussianMixture:
    return GaussianMixture(MEAN, torch.zeros(1, dtype=torch.float64), var=1.0)


def run(problem: InverseProblem, n: int, seed: int = 0, **cfg: object):
    x_init = torch.randn(n, MEAN.shape[1], generator=make_generator(seed), dtype=torch.float64)
    return ddrm(gaussian().denoiser(), problem, x_init, generator=make_generator(seed + 1), config=DDRMConfig(**cfg))


def ddrm_moments(
    a: torch.Tensor, y: torch.Tensor, sigma_y: float, cfg: DDRMConfig, warm: WarmStart | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDRM's exact output mean and covariance for the prior N(MEAN, I), derived from Eq. 7-8 of the paper.

    The prior factorises in any orthonormal basis and its denoiser ``m + k (x - m)``, ``k = 1 / (1 + sigma^2)``,
    is affine, so each V-basis coordinate is an independent scalar Gaussian chain: every update is
    ``x' = alpha (x - m) + beta + std z`` and mean and variance propagate in closed form. ``warm``: the chain starts
    at the largest grid index whose level is at or below ``warm.sigma`` with the law of Eq. 8 at ``x_0 = x_hat``.
    """
    u, s, vh = torch.linalg.svd(a, full_matrices=True)
    r = s.numel()
    ybar = (u.T @ y.reshape(-1)) / s
    m = vh @ MEAN.reshape(-1)
    levels = gaussian().denoiser().levels
    sig, ts = levels.sigmas, levels.timesteps(cfg.n_steps)
    eta, eta_b = cfg.eta, cfg.eta_b
    eta_c = cfg.eta if cfg.eta_c is None else cfg.eta_c
    top = cfg.n_steps - 1
    if warm is not None:
        top = max([1, *(i for i in range(1, cfg.n_steps) if float(sig[ts[i]]) <= warm.sigma)])
    sig_t = float(sig[ts[top]])
    mean, var = torch.zeros_like(m), torch.full_like(m, sig_t**2)
    if warm is not None:
        mean = vh @ warm.estimate.reshape(-1).to(m)
    for j in range(r):
        noise = sigma_y / float(s[j])
        if warm is None and sig_t > noise:
            mean[j], var[j] = ybar[j], sig_t**2 - noise**2
        elif warm is not None and sig_t >= noise:  # Eq. 8's "noisier than y" law at x_0 = x_hat
            mean[j], var[j] = (1 - eta_b) * mean[j] + eta_b * ybar[j], sig_t**2 - (eta_b * noise) ** 2
        elif warm is not None:  # Eq. 8's "less noisy than y" law at x_0 = x_hat
            c = math.sqrt(1 - eta**2) * sig_t / noise
            mean[j], var[j] = (1 - c) * mean[j] + c * ybar[j], (eta * sig_t) ** 2
    for i in range(top, 1, -1):
        sig_t, sig_n = float(sig[ts[i]]), float(sig[ts[i - 1]])
        k = 1 / (1 + sig_t**2)
        x0_mean, x0_var = m + k * (mean - m), k**2 * var
        # null space: x' = x0 + sqrt(1 - eta_c^2) sig_n (x - x0) / sig_t + eta_c sig_n z, with x - x0 = (1 - k)(x - m)
        gain = k + math.sqrt(1 - eta_c**2) * sig_n * (1 - k) / sig_t
        new_mean = m + gain * (mean - m)
        new_var = gain**2 * var + (eta_c * sig_n) ** 2
        for j in range(r):
            noise = sigma_y / float(s[j])
            if sig_n >= noise:  # x' = (1 - eta_b) x0 + eta_b ybar + sqrt(sig_n^2 - eta_b^2 noise^2) z
                new_mean[j] = (1 - eta_b) * x0_mean[j] + eta_b * ybar[j]
                new_var[j] = (1 - eta_b) ** 2 * x0_var[j] + sig_n**2 - (eta_b * noise) ** 2
            else:  # x' = x0 + sqrt(1 - eta^2) sig_n (ybar - x0) / noise + eta sig_n z
                c = math.sqrt(1 - eta**2) * sig_n / noise
                new_mean[j] = (1 - c) * x0_mean[j] + c * ybar[j]
                new_var[j] = (1 - c) ** 2 * x0_var[j] + (eta * sig_n) ** 2
        mean, var = new_mean, new_var
    k = 1 / (1 + float(sig[ts[1]]) ** 2)
    return vh.T @ (m + k * (mean - m)), vh.T @ torch.diag(k**2 * var) @ vh


def test_registry_and_presets() -> None:
    assert get_sampler("ddrm") is SPEC
    assert SPEC.config() == DDRMConfig(n_steps=20, eta=0.85, eta_b=1.0, eta_c=None)
    assert SPEC.config("paper-audio").n_steps == 1000
    assert SPEC.config("mcgdiff").eta_c == 1.0
    assert SPEC.needs_svd and SPEC.needs_linear


@pytest.mark.parametrize("n_steps", [3, 20])
def test_cost_formula(n_steps: int) -> None:
    res = run(InverseProblem(MatrixOperator(A), Y, 0.3), 4, n_steps=n_steps)
    assert (res.nfe, res.vjp) == (n_steps - 1, 0)
    assert torch.all(torch.isfinite(res.samples))


def test_same_seed_same_samples() -> None:
    problem = InverseProblem(MatrixOperator(A), Y, 0.3)
    assert torch.equal(run(problem, 5).samples, run(problem, 5).samples)
    assert not torch.equal(run(problem, 5).samples, run(problem, 5, seed=3).samples)


def test_needs_svd_and_valid_etas() -> None:
    problem = InverseProblem(NoSVDMatrix(A), Y, 0.3)
    with pytest.raises(UserInputError):
        SPEC.check(problem)
    with pytest.raises(UserInputError):
        run(problem, 2)
    with pytest.raises(UserInputError):
        run(InverseProblem(MatrixOperator(A), Y, 0.3), 2, eta_b=1.5)


@pytest.mark.parametrize("sigma_y", [0.3, 1.5])
@pytest.mark.parametrize("cfg", [DDRMConfig(), DDRMConfig(eta_c=1.0), DDRMConfig(n_steps=8, eta=0.3, eta_b=0.6)])
def test_moments_match_exact_recursion(cfg: DDRMConfig, sigma_y: float) -> None:
    """Sample mean and variances agree with the closed-form moment recursion (5 standard errors; the relative
    standard error of a sample variance is sqrt(2 / n)). sigma_y = 1.5 puts most late steps in the
    'less noisy than y' case, sigma_y = 0.3 in the 'noisier than y' case."""
    n = 20000
    res = run(InverseProblem(MatrixOperator(A), Y, sigma_y), n, **vars(cfg))
    mean, cov = ddrm_moments(A, Y, sigma_y, cfg)
    var = torch.diag(cov)
    assert torch.all((res.samples.mean(0) - mean).abs() < 5 * (var / n).sqrt())
    assert torch.all((res.samples.var(0) / var - 1).abs() < 5 * math.sqrt(2 / n))


@pytest.mark.parametrize("sigma_y", [0.3, 1.5])
@pytest.mark.parametrize("cfg", [DDRMConfig(), DDRMConfig(n_steps=8, eta=0.3, eta_b=0.6)])
def test_warm_start_moments_match_exact_recursion(cfg: DDRMConfig, sigma_y: float) -> None:
    """A warm start at S = 1 from an estimate away from the posterior: the samples' moments agree with the recursion
    started from the law of Eq. 8 at ``x_0 = x_hat`` (5 standard errors, as above), and the chain ran only the grid
    levels at or below S."""
    n, warm = 20000, WarmStart(torch.tensor([[0.5, -1.0, 2.0, 1.5]], dtype=torch.float64), 1.0)
    x_init = torch.randn(n, 4, generator=make_generator(0), dtype=torch.float64)
    problem = InverseProblem(MatrixOperator(A), Y, sigma_y)
    res = ddrm(gaussian().denoiser(), problem, x_init, generator=make_generator(1), config=cfg, warm=warm)
    mean, cov = ddrm_moments(A, Y, sigma_y, cfg, warm)
    var = torch.diag(cov)
    assert torch.all((res.samples.mean(0) - mean).abs() < 5 * (var / n).sqrt())
    assert torch.all((res.samples.var(0) / var - 1).abs() < 5 * math.sqrt(2 / n))
    levels = gaussian().denoiser().levels
    sigmas = levels.sigmas[levels.timesteps(cfg.n_steps)]
    assert res.nfe == int((sigmas[1:] <= 1.0).sum()) < cfg.n_steps - 1


def test_gaussian_posterior_mean() -> None:
    """Key test: single Gaussian prior, sigma_y > 0, default config (20 steps). DDRM's mean is biased by the
    finite grid: its exact mean (the recursion above) is within 0.15 posterior std of the posterior mean (0.11
    at most here; 0.013 at 100 steps, 0.17 at 1000: eta = 0.85 pulls harder towards y on fine grids); the
    sample mean must lie within that plus 5 standard errors."""
    sigma_y, n = 0.3, 4000
    post = gaussian().posterior(A, Y, sigma_y)
    post_std = torch.diag(post.cov).sqrt()
    assert torch.all((ddrm_moments(A, Y, sigma_y, DDRMConfig())[0] - post.means[0]).abs() < 0.15 * post_std)
    assert torch.all((ddrm_moments(A, Y, sigma_y, DDRMConfig(n_steps=100))[0] - post.means[0]).abs() < 0.04 * post_std)
    res = run(InverseProblem(MatrixOperator(A), Y, sigma_y), n)
    mean, se = res.samples.mean(0), res.samples.std(0) / math.sqrt(n)
    tol = 5 * se + 0.15 * post_std
    assert torch.all((mean - post.means[0]).abs() < tol)
    assert not torch.all((MEAN[0] - post.means[0]).abs() < tol)  # the check can fail


def test_identity_operator_is_exact_gaussian() -> None:
    """A = I, eta_b = 1, sigma_y below every grid level but the clean one: every step is 'noisier than y', so
    x_{ts[1]} = y + sqrt(sigma_1^2 - sigma_y^2) z exactly and the output is D(x_{ts[1]}, sigma_1), i.e.
    N(m + k (y - m), k^2 (sigma_1^2 - sigma_y^2)) with k = 1 / (1 + sigma_1^2) for the prior N(m, I)."""
    sigma_y, n, n_steps = 0.05, 4000, 20
    y = torch.tensor([[0.3, -1.0, 2.5, 4.0]], dtype=torch.float64)
    res = run(InverseProblem(MatrixOperator(torch.eye(4, dtype=torch.float64)), y, sigma_y), n, n_steps=n_steps)
    levels = gaussian().denoiser().levels
    sigma_1 = float(levels.sigmas[levels.timesteps(n_steps)[1]])
    assert sigma_1 > sigma_y
    k = 1 / (1 + sigma_1**2)
    mean, std = MEAN[0] + k * (y[0] - MEAN[0]), k * math.sqrt(sigma_1**2 - sigma_y**2)
    se = std / math.sqrt(n)
    assert torch.all((res.samples.mean(0) - mean).abs() < 5 * se)
    assert torch.all((res.samples.std(0) / std - 1).abs() < 5 / math.sqrt(2 * n))


def test_gmm_sliced_wasserstein_beats_prior() -> None:
    """d = 8, d_y = 1, informative observation: SW to the exact posterior is well below the prior's."""
    sw, sw_prior = sw_to_posterior_and_prior_sw(ddrm, config=SPEC.config())
    assert sw < 0.7 * sw_prior
