"""DAPS: grids, Langevin closed form, wiring, cost, determinism, quirk flags and a GMM sanity check."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mgdm_audio.core.denoiser import VEDenoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator, Operator
from mgdm_audio.core.rng import make_generator, randn_like
from mgdm_audio.core.schedules import NoiseLevels
from mgdm_audio.metrics.sliced_wasserstein import sliced_wasserstein
from mgdm_audio.samplers.daps import DAPS_TASK_LR, DAPSConfig, _langevin, daps, langevin_lr, poly_sigmas
from mgdm_audio.samplers.registry import get_sampler


def gaussian_problem(d: int = 4, sigma_y: float = 0.3, seed: int = 0):
    g = make_generator(seed)
    mix = GaussianMixture(torch.randn(1, d, generator=g, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    a = torch.randn(2, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    y = torch.randn(1, 2, generator=g, dtype=torch.float64)
    return mix, InverseProblem(MatrixOperator(a.float()), y.float(), sigma_y)


def test_poly_grid_matches_formula() -> None:
    s = poly_sigmas(200, 100.0, 0.1)
    assert len(s) == 201 and s[-1] == 0.0
    assert s[0] == pytest.approx(100.0) and s[199] == pytest.approx(0.1)
    i = 57
    expected = (100 ** (1 / 7) + i / 199 * (0.1 ** (1 / 7) - 100 ** (1 / 7))) ** 7
    assert s[i] == pytest.approx(expected, rel=1e-12)
    assert poly_sigmas(1, 3.0, 0.01) == pytest.approx([3.0, 0.0])


def test_langevin_lr_schedule() -> None:
    cfg = DAPSConfig()
    assert langevin_lr(cfg, 0) == pytest.approx(5e-5)
    assert langevin_lr(cfg, 100) == pytest.approx(5e-5 * (1 + 0.5 * (0.01 - 1)))
    assert langevin_lr(cfg, 200) == pytest.approx(5e-5 * 0.01)


def test_langevin_stationary_law_is_exact_ula_gaussian() -> None:
    # U(x) = |y - A x|^2/(2 tau^2) + |x - m|^2/(2 s^2) is quadratic with Hessian Q; ULA with step h has the
    # Gaussian stationary law N(Q^-1 b, (Q - h Q^2 / 2)^-1) exactly.
    a = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    y = torch.tensor([[0.7]], dtype=torch.float64)
    problem = InverseProblem(MatrixOperator(a), y, 0.1)
    m, s, tau, h = torch.tensor([0.2, -0.4], dtype=torch.float64), 0.5, 0.3, 0.02
    x0hat = m.expand(10000, 2).clone()
    x, n_nan = _langevin(problem, x0hat, s, tau, h, 200, True, make_generator(0))
    q = a.T @ a / tau**2 + torch.eye(2, dtype=torch.float64) / s**2
    mean = torch.linalg.solve(q, a.T @ y[0] / tau**2 + m / s**2)
    cov = torch.linalg.inv(q - h * q @ q / 2)
    assert n_nan == 0
    assert torch.allclose(x.mean(0), mean, atol=4 * math.sqrt(float(cov.diagonal().max()) / 10000))
    assert torch.allclose(torch.cov(x.T), cov, rtol=0.05, atol=1e-3)


def test_one_ode_step_no_langevin_is_denoise_renoise() -> None:
    # ode_steps=1 gives x0hat = D(x, sigma_i) exactly; with no Langevin DAPS is x <- D(x, s_i) + s_{i+1} z.
    mix, problem = gaussian_problem()
    prior = mix.denoiser()
    cfg = DAPSConfig(annealing_steps=6, ode_steps=1, langevin_steps=0, sigma_max=20.0)
    x_init = torch.randn(5, 4, generator=make_generator(1))
    out = daps(prior, problem, x_init, generator=make_generator(2), config=cfg).samples
    sig, g, x = poly_sigmas(6, 20.0, 0.1), make_generator(2), 20.0 * x_init
    for i in range(6):
        x = prior(x, sig[i])
        if sig[i + 1] > 0:
            x = x + sig[i + 1] * randn_like(x, g)
    assert torch.allclose(out, x, atol=1e-6)


def test_update_equations_match_a_manual_recursion() -> None:
    mix, problem = gaussian_problem()
    prior, a, y = mix.denoiser(), problem.operator.matrix, problem.y
    cfg = DAPSConfig(
        annealing_steps=4, ode_steps=3, langevin_steps=2, sigma_max=20.0, inner_sigma_min=0.05, lr=1e-3, tau=0.2
    )
    x_init = torch.randn(5, 4, generator=make_generator(1))
    out = daps(prior, problem, x_init, generator=make_generator(2), config=cfg).samples
    g, x, m = make_generator(2), 20.0 * x_init, 4
    sig = [(20 ** (1 / 7) + i / 3 * (0.1 ** (1 / 7) - 20 ** (1 / 7))) ** 7 for i in range(m)] + [0.0]
    for i in range(m):
        inner = [(sig[i] ** (1 / 7) + j / 2 * (0.05 ** (1 / 7) - sig[i] ** (1 / 7))) ** 7 for j in range(3)] + [0.0]
        x0 = x
        for j in range(3):
            x0 = x0 + (inner[j] - inner[j + 1]) / inner[j] * (prior(x0, inner[j]) - x0)
        lr = 1e-3 * (1 + i / m * (0.01 - 1))
        z = x0.clone()
        for _ in range(2):
            grad = (z @ a.T - y) @ a / 0.2**2 + (z - x0) / sig[i] ** 2
            z = z - lr * grad + math.sqrt(2 * lr) * torch.randn(z.shape, generator=g)
        x = z + sig[i + 1] * torch.randn(z.shape, generator=g) if i + 1 < m else z
    assert torch.allclose(out, x, atol=1e-5)


@pytest.mark.parametrize(("m", "ode", "lgv"), [(7, 3, 4), (4, 5, 0)])
def test_cost_formula(m: int, ode: int, lgv: int) -> None:
    mix, problem = gaussian_problem()
    cfg = DAPSConfig(annealing_steps=m, ode_steps=ode, langevin_steps=lgv)
    res = daps(mix.denoiser(), problem, torch.randn(3, 4, generator=make_generator(0)), config=cfg)
    assert (res.nfe, res.vjp) == (m * ode, 0)


def test_reference_budget_is_1000_nfe() -> None:
    mix, problem = gaussian_problem()
    res = daps(mix.denoiser(), problem, torch.randn(2, 4), config=DAPSConfig(langevin_steps=0))
    assert (res.nfe, res.vjp) == (1000, 0)


def test_nonlinear_operator_uses_autograd_through_a_only() -> None:
    mix, problem = gaussian_problem()

    class Wrapped(Operator):
        def forward(self, x: Tensor) -> Tensor:
            return problem.operator(x)

    other = InverseProblem(Wrapped(), problem.y, problem.sigma_y)
    cfg = DAPSConfig(annealing_steps=5, langevin_steps=5)
    x_init = torch.randn(3, 4, generator=make_generator(0))
    a = daps(mix.denoiser(), problem, x_init, generator=make_generator(1), config=cfg)
    b = daps(mix.denoiser(), other, x_init, generator=make_generator(1), config=cfg)
    assert b.vjp == 0
    assert torch.allclose(a.samples, b.samples, atol=1e-5)


def test_same_seed_same_samples() -> None:
    mix, problem = gaussian_problem()
    cfg = DAPSConfig(annealing_steps=5, langevin_steps=5)
    x_init = torch.randn(3, 4, generator=make_generator(0))
    runs = [daps(mix.denoiser(), problem, x_init, generator=make_generator(s), config=cfg).samples for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


class NaNOnFirstChain(Operator):
    """``A x = x[:, :1]`` except that chain 0 is multiplied by NaN (so its gradient is NaN too)."""

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.ones(x.shape[0], 1, dtype=x.dtype)
        scale[0] = float("nan")
        return x[:, :1] * scale


def test_nan_handling_whole_batch_and_per_chain() -> None:
    mix, _ = gaussian_problem()
    problem = InverseProblem(NaNOnFirstChain(), torch.zeros(1, 1), 0.1)
    x_init = torch.randn(3, 4, generator=make_generator(0))
    base = dict(annealing_steps=3, langevin_steps=2)
    res = daps(mix.denoiser(), problem, x_init, generator=make_generator(1), config=DAPSConfig(**base))
    assert torch.equal(res.samples, torch.zeros_like(res.samples))  # the reference: one NaN zeroes every chain
    assert res.info["nan_chains"] == 9
    cfg = DAPSConfig(**base, nan_zero_whole_batch=False)
    res = daps(mix.denoiser(), problem, x_init, generator=make_generator(1), config=cfg)
    assert torch.equal(res.samples[0], torch.zeros(4)) and bool((res.samples[1:] != 0).all())
    assert res.info["nan_chains"] == 3


def test_tau_flag_and_sigma_clipping() -> None:
    mix, problem = gaussian_problem(sigma_y=0.3)
    prior = VEDenoiser(mix.denoise, NoiseLevels.karras(0.5, 10.0, n=50))
    x_init = torch.randn(2, 4)
    cfg = DAPSConfig(annealing_steps=3, langevin_steps=1, tau_from_sigma_y=True)
    info = daps(prior, problem, x_init, config=cfg).info
    assert info["tau"] == 0.3
    assert (info["sigma_max"], info["sigma_min"], info["inner_sigma_min"]) == pytest.approx((10.0, 0.5, 0.5))
    info = daps(prior, problem, x_init, config=DAPSConfig(annealing_steps=3, clip_sigmas=False)).info
    assert (info["tau"], info["sigma_max"], info["inner_sigma_min"]) == (0.01, 100.0, 0.01)
    with pytest.raises(UserInputError):
        daps(prior, problem, x_init, config=DAPSConfig(sigma_min=50.0, sigma_max=100.0))


def test_bad_inputs() -> None:
    mix, problem = gaussian_problem()
    with pytest.raises(UserInputError):
        daps(mix.denoiser(), None, torch.randn(2, 4))
    with pytest.raises(UserInputError):
        daps(mix.denoiser(), problem, torch.randn(2, 4), config=DAPSConfig(tau=0.0))
    with pytest.raises(UserInputError):
        daps(mix.denoiser(), problem, torch.randn(2, 4), config=DAPSConfig(ode_steps=0))


def test_registry_presets() -> None:
    spec = get_sampler("daps")
    assert spec.config("paper-image") == DAPSConfig()
    audio = spec.config("paper-audio")
    assert (audio.annealing_steps, audio.sigma_max, audio.sigma_min, audio.inner_sigma_min) == (200, 20.0, 1e-3, 1e-4)
    assert (audio.lr, audio.tau, audio.lr_min_ratio) == (1e-5, 0.005, 1e-3)
    assert spec.config("fast").annealing_steps == 50
    assert not spec.needs_svd and not spec.needs_linear
    assert DAPS_TASK_LR["high_dynamic_range"] == 2e-5 and DAPS_TASK_LR["sr4"] == 1e-4


def test_gmm_posterior_closer_than_prior() -> None:
    torch.manual_seed(0)
    g = make_generator(5)
    mix = GaussianMixture.grid25(8, g)
    a = torch.randn(1, 8, generator=g, dtype=torch.float64)
    a = a / a.norm()
    x = mix.sample(1, g)
    y = x @ a.T + 0.05 * torch.randn(1, 1, generator=g, dtype=torch.float64)
    ref = mix.posterior(a, y, 0.05).sample(500, g)
    problem = InverseProblem(MatrixOperator(a.float()), y.float(), 0.05)
    cfg = DAPSConfig(annealing_steps=20, langevin_steps=20)
    res = daps(
        mix.denoiser(),
        problem,
        torch.randn(300, 8, generator=make_generator(1)),
        generator=make_generator(2),
        config=cfg,
    )
    sw = sliced_wasserstein(res.samples, ref, generator=make_generator(7))
    sw_prior = sliced_wasserstein(mix.sample(300, g), ref, generator=make_generator(7))
    assert sw < 0.5 * sw_prior
