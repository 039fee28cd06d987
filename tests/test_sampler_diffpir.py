"""DiffPIR: cost, determinism, quirk flags, the exact proximal data step, and posterior sanity checks."""

from __future__ import annotations

import math

import pytest
import torch

from mgdm_audio.core.denoiser import vp_denoise
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.samplers.diffpir import DIFFPIR_TASK_PARAMS, SPEC, DiffPIRConfig, diffpir, proximal_data_step
from mgdm_audio.samplers.registry import get_sampler
from tests.operators_for_tests import Cubic, NoSVDMatrix, sw_to_posterior_and_prior_sw


def gaussian_problem(d: int = 4) -> tuple[GaussianMixture, torch.Tensor, torch.Tensor, float]:
    mean = torch.tensor([[1.0, -2.0, 3.0, 0.5]], dtype=torch.float64)[:, :d]
    prior = GaussianMixture(mean, torch.zeros(1, dtype=torch.float64), var=1.0)
    a = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0]], dtype=torch.float64)[:, :d]
    y = torch.tensor([[2.0, -4.0]], dtype=torch.float64)
    return prior, a, y, 0.3


def run(problem: InverseProblem, prior: GaussianMixture, n: int, seed: int = 0, **cfg: object) -> object:
    x_init = torch.randn(n, prior.dim, generator=make_generator(seed), dtype=torch.float64)
    return diffpir(prior.denoiser(), problem, x_init, generator=make_generator(seed + 1), config=DiffPIRConfig(**cfg))


def test_registry_presets_and_task_params() -> None:
    assert get_sampler("diffpir") is SPEC
    assert SPEC.config() == DiffPIRConfig(n_steps=1000, lam=1.0, zeta=1.0)
    assert SPEC.config("paper-audio") == DiffPIRConfig(lam=1.0, zeta=1.0)
    assert SPEC.config("fast").n_steps == 100
    assert not SPEC.needs_linear and not SPEC.needs_svd
    assert DIFFPIR_TASK_PARAMS["sr4"] == (1.0, 0.1) and DIFFPIR_TASK_PARAMS["inpainting_center"] == (1.0, 1.0)


@pytest.mark.parametrize("final_denoise", [False, True])
@pytest.mark.parametrize("operator", ["svd", "nosvd", "nonlinear"])
def test_cost_formula(final_denoise: bool, operator: str) -> None:
    prior, a, y, sy = gaussian_problem()
    op = {"svd": MatrixOperator(a), "nosvd": NoSVDMatrix(a), "nonlinear": Cubic(a)}[operator]
    res = run(InverseProblem(op, y, sy), prior, 3, n_steps=12, final_denoise=final_denoise)
    assert res.nfe == 12 - 2 + int(final_denoise)
    assert res.vjp == 0
    if operator == "svd":  # the gradient fallback may diverge, as the reference notes
        assert torch.all(torch.isfinite(res.samples))


def test_same_seed_same_samples() -> None:
    prior, a, y, sy = gaussian_problem()
    problem = InverseProblem(MatrixOperator(a), y, sy)
    r1, r2 = run(problem, prior, 5, n_steps=20), run(problem, prior, 5, n_steps=20)
    assert torch.equal(r1.samples, r2.samples)
    assert not torch.equal(r1.samples, run(problem, prior, 5, seed=7, n_steps=20).samples)


def test_use_x_init_flag() -> None:
    """Fixed (default): the output depends on x_init; reference mode: only the generator matters."""
    prior, a, y, sy = gaussian_problem()
    problem = InverseProblem(MatrixOperator(a), y, sy)
    x1 = torch.randn(4, 4, generator=make_generator(1), dtype=torch.float64)
    x2 = torch.randn(4, 4, generator=make_generator(2), dtype=torch.float64)
    den = prior.denoiser()

    def go(x_init: torch.Tensor, use: bool) -> torch.Tensor:
        cfg = DiffPIRConfig(n_steps=10, zeta=0.3, use_x_init=use)
        return diffpir(den, problem, x_init, generator=make_generator(3), config=cfg).samples

    assert (go(x1, True) - go(x2, True)).abs().max() > 1e-4
    assert torch.equal(go(x1, False), go(x2, False))


def test_final_denoise_is_tweedie_of_reference_output() -> None:
    prior, a, y, sy = gaussian_problem()
    problem = InverseProblem(MatrixOperator(a), y, sy)
    noisy = run(problem, prior, 6, n_steps=15).samples
    clean = run(problem, prior, 6, n_steps=15, final_denoise=True).samples
    den = prior.denoiser()
    ts = den.levels.timesteps(15)
    torch.testing.assert_close(clean, vp_denoise(den, noisy, den.levels.abar[ts[1]]))


@pytest.mark.parametrize("zeta", [0.0, 0.3, 1.0])
def test_matches_direct_transcription(zeta: float) -> None:
    """The whole chain equals a dense-algebra transcription of the reference's ``diffpir.py`` (one normal draw per
    step, in order):
    ``x0 = D_k(x)``, ``(rho I + A^T A) x0' = rho x0 + A^T y``, ``e = (x - sqrt(a_k) x0') / sqrt(1 - a_k)``,
    ``x = sqrt(a_k') x0' + sqrt(1 - a_k') (sqrt(1 - zeta) e + sqrt(zeta) z)``."""
    prior, a, y, sy = gaussian_problem()
    n, n_steps, lam = 5, 30, 0.7
    x_init = torch.randn(n, 4, generator=make_generator(0), dtype=torch.float64)
    cfg = DiffPIRConfig(n_steps=n_steps, lam=lam, zeta=zeta)
    den = prior.denoiser()
    out = diffpir(den, InverseProblem(MatrixOperator(a), y, sy), x_init, generator=make_generator(1), config=cfg)
    gen, abar, ts = make_generator(1), den.levels.abar, den.levels.timesteps(n_steps)
    x = x_init
    for i in range(n_steps - 1, 1, -1):
        ak, an = abar[ts[i]], abar[ts[i - 1]]
        x0 = prior.denoise(x / ak.sqrt(), ((1 - ak) / ak).sqrt().expand(n))
        rho = lam * sy**2 * ak / (1 - ak)
        x0 = torch.linalg.solve(rho * torch.eye(4, dtype=torch.float64) + a.T @ a, (rho * x0 + y @ a).T).T
        e = (x - ak.sqrt() * x0) / (1 - ak).sqrt()
        z = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        x = an.sqrt() * x0 + (1 - an).sqrt() * ((1 - zeta) ** 0.5 * e + zeta**0.5 * z)
    torch.testing.assert_close(out.samples, x)


def test_proximal_step_exact_with_svd() -> None:
    """``(rho I + A^T A) x = rho x0 + A^T y`` solved in the V basis equals a dense solve."""
    g = make_generator(0)
    a = torch.randn(3, 6, generator=g, dtype=torch.float64)
    a[2] = a[0] + a[1]  # rank 2: one range direction is missing
    y = torch.randn(1, 3, generator=g, dtype=torch.float64)
    x0 = torch.randn(5, 6, generator=g, dtype=torch.float64)
    problem = InverseProblem(MatrixOperator(a), y, 0.1)
    for rho in (1e-3, 0.7, 50.0):
        expected = torch.linalg.solve(rho * torch.eye(6, dtype=torch.float64) + a.T @ a, (rho * x0 + y @ a).T).T
        torch.testing.assert_close(proximal_data_step(x0, problem, rho), expected, rtol=1e-8, atol=1e-8)


def test_proximal_fallback_is_one_gradient_step() -> None:
    """Without SVD pieces: ``x0 - grad ||y - A(x0)||^2 / (2 rho)``, linear (adjoint) and non-linear (autograd)."""
    g = make_generator(1)
    a = torch.randn(2, 4, generator=g, dtype=torch.float64)
    y = torch.randn(1, 2, generator=g, dtype=torch.float64)
    x0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    rho = 0.4
    expected = x0 + (y - x0 @ a.T) @ a / rho
    torch.testing.assert_close(proximal_data_step(x0, InverseProblem(NoSVDMatrix(a), y, 0.2), rho), expected)
    z = x0 @ a.T
    r = y - (z + 0.1 * z**3)
    expected_nl = x0 + (r * (1 + 0.3 * z**2)) @ a / rho
    torch.testing.assert_close(proximal_data_step(x0, InverseProblem(Cubic(a), y, 0.2), rho), expected_nl)


def test_gaussian_posterior_mean() -> None:
    """Single Gaussian prior: the sample mean is within 5 standard errors (+5% of a posterior std for the
    100-step grid) of the exact posterior mean. (DiffPIR with zeta = 1 is under-dispersed, so the spread is
    not checked.)"""
    prior, a, y, sy = gaussian_problem()
    post = prior.posterior(a, y, sy)
    n = 2000
    res = run(InverseProblem(MatrixOperator(a), y, sy), prior, n, n_steps=100)
    mean, se = res.samples.mean(0), res.samples.std(0) / math.sqrt(n)
    tol = 5 * se + 0.05 * torch.diag(post.cov).sqrt()
    assert torch.all((mean - post.means[0]).abs() < tol)
    assert not torch.all((prior.means[0] - post.means[0]).abs() < tol)  # the check can fail


def test_gmm_sliced_wasserstein_beats_prior() -> None:
    """d = 8, d_y = 1, informative observation: SW to the exact posterior is well below the prior's."""
    sw, sw_prior = sw_to_posterior_and_prior_sw(diffpir, config=SPEC.config("fast"))
    assert sw < 0.7 * sw_prior
