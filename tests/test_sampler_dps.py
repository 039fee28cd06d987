"""DPS: exact cost, determinism, reduction to DDIM, a step-by-step reference loop, and a GMM sanity check."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture, gmm_noise_levels
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator, Operator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.metrics.sliced_wasserstein import sliced_wasserstein
from mgdm_audio.samplers import ddim as ddim_module
from mgdm_audio.samplers.dps import DPS_TASK_GAMMA, SPEC, DPSConfig, dps


def _gaussian_problem(d: int = 4, d_y: int = 2, var: float = 2.0, sigma_y: float = 0.3, seed: int = 0):
    """A single-Gaussian prior ``N(0, var I)`` (its denoiser is linear) and a random linear observation."""
    g = make_generator(seed)
    mix = GaussianMixture(torch.zeros(1, d, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), var)
    a = torch.randn(d_y, d, generator=g, dtype=torch.float64)
    y = mix.sample(1, g) @ a.T + sigma_y * torch.randn(1, d_y, generator=g, dtype=torch.float64)
    return mix, a, InverseProblem(MatrixOperator(a), y, sigma_y)


def _gmm_problem(seed: int = 5, d: int = 8, sigma_y: float = 0.05):
    """The 25-component mixture with a strongly informative scalar observation (float32 chains)."""
    g = make_generator(seed)
    mix = GaussianMixture.grid25(d, g)
    a = torch.randn(1, d, generator=g, dtype=torch.float64)
    y = mix.sample(1, g) @ a.T + sigma_y * torch.randn(1, 1, generator=g, dtype=torch.float64)
    return mix, a, y, InverseProblem(MatrixOperator(a.float()), y.float(), sigma_y)


class _TanhSum(Operator):
    """A nonlinear operator without adjoint or SVD: ``A(x) = (sum tanh(x), sum x^2 / d)``."""

    x_shape = (4,)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([torch.tanh(x).sum(1), x.pow(2).mean(1)], 1)


@pytest.mark.parametrize("n_steps", [3, 7, 12])
def test_cost_is_n_minus_1_nfe_and_n_minus_2_vjp(n_steps: int) -> None:
    mix, _, problem = _gaussian_problem()
    x_init = torch.randn(3, 4, generator=make_generator(1), dtype=torch.float64)
    res = dps(mix.denoiser(), problem, x_init, generator=make_generator(2), config=DPSConfig(n_steps=n_steps))
    assert (res.nfe, res.vjp) == (n_steps - 1, n_steps - 2)
    assert res.samples.shape == x_init.shape and torch.all(torch.isfinite(res.samples))


def test_same_seed_same_samples_and_other_seed_differs() -> None:
    mix, _, _, problem = _gmm_problem()
    x_init = torch.randn(16, 8, generator=make_generator(1))
    cfg = DPSConfig(n_steps=20)
    runs = [dps(mix.denoiser(), problem, x_init, generator=make_generator(s), config=cfg).samples for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_gamma_zero_is_unconditional_ddim() -> None:
    mix, _, _, problem = _gmm_problem()
    x_init = torch.randn(16, 8, generator=make_generator(1))
    guided = dps(mix.denoiser(), problem, x_init, generator=make_generator(3), config=DPSConfig(n_steps=15, gamma=0.0))
    plain = ddim_module.ddim(
        mix.denoiser(), None, x_init, generator=make_generator(3), config=ddim_module.DDIMConfig(n_steps=15, eta=1.0)
    )
    torch.testing.assert_close(guided.samples, plain.samples, rtol=0, atol=0)


def _reference_dps(
    a: Tensor,
    y: Tensor,
    var: float,
    x_init: Tensor,
    n_steps: int,
    gamma: float,
    start_scale: str,
    half: bool,
    seed: int,
) -> Tensor:
    """The reference's ``dps.py`` written out for the prior ``N(0, var I)``: ``D_k(x) = c_k x`` with
    ``c_k = sqrt(a) var / (a var + 1 - a)``, so ``grad_x(-||y - A D_k(x)||^2) = 2 c_k A^T (y - A D_k(x))``; DDIM(eta=1)
    coefficients of the bridge kernel with s = 0."""
    abar = gmm_noise_levels().abar
    ts = gmm_noise_levels().timesteps(n_steps)
    g = make_generator(seed)
    x = x_init.clone() if start_scale == "unit" else x_init * math.sqrt(1 - float(abar[ts[-1]]))
    for i in range(n_steps - 1, 1, -1):
        ak, an = float(abar[ts[i]]), float(abar[ts[i - 1]])
        c = math.sqrt(ak) * var / (ak * var + 1 - ak)
        x0 = c * x
        res = y - x0 @ a.T
        grad = 2 * c * res @ a
        r = res.norm(dim=1, keepdim=True)
        std = math.sqrt((1 - ak / an) * (1 - an) / (1 - ak))
        c_l = math.sqrt((1 - an - std**2) / (1 - ak))
        c_0 = math.sqrt(an) - c_l * math.sqrt(ak)
        x = c_l * x + c_0 * x0 + std * torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = x + (gamma * (0.5 if half else 1.0) / r) * grad
    a1 = float(abar[ts[1]])
    return math.sqrt(a1) * var / (a1 * var + 1 - a1) * x


@pytest.mark.parametrize(("start_scale", "half"), [("unit", False), ("vp", False), ("unit", True)])
def test_matches_reference_loop_on_gaussian_prior(start_scale: str, half: bool) -> None:
    var = 2.0
    mix, a, problem = _gaussian_problem(var=var)
    x_init = torch.randn(5, 4, generator=make_generator(1), dtype=torch.float64)
    cfg = DPSConfig(n_steps=9, gamma=0.7, norm_gradient=half)
    got = dps(mix.denoiser(), problem, x_init, generator=make_generator(3), config=cfg, start_scale=start_scale).samples
    want = _reference_dps(a, problem.y, var, x_init, 9, 0.7, start_scale, half, seed=3)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_norm_gradient_halves_the_step() -> None:
    mix, _, problem = _gaussian_problem()
    x_init = torch.randn(5, 4, generator=make_generator(1), dtype=torch.float64)
    full = dps(mix.denoiser(), problem, x_init, generator=make_generator(3), config=DPSConfig(n_steps=10, gamma=0.4))
    half = dps(
        mix.denoiser(),
        problem,
        x_init,
        generator=make_generator(3),
        config=DPSConfig(n_steps=10, gamma=0.8, norm_gradient=True),
    )
    torch.testing.assert_close(full.samples, half.samples, rtol=1e-12, atol=1e-12)


def test_nonlinear_operator_without_adjoint() -> None:
    assert not SPEC.needs_linear and not SPEC.needs_svd
    mix = GaussianMixture(torch.zeros(1, 4, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    problem = InverseProblem(_TanhSum(), torch.tensor([[1.5, 0.8]], dtype=torch.float64), 0.1)
    SPEC.check(problem)
    x_init = torch.randn(6, 4, generator=make_generator(1), dtype=torch.float64)
    res = SPEC.run(mix.denoiser(), problem, x_init, generator=make_generator(2), config=SPEC.config(n_steps=30))
    assert (res.nfe, res.vjp) == (29, 28)
    assert torch.all(torch.isfinite(res.samples))
    # the guidance reduces the data misfit relative to unguided sampling from the same noise
    free = SPEC.run(
        mix.denoiser(), problem, x_init, generator=make_generator(2), config=SPEC.config(n_steps=30, gamma=0)
    )
    assert problem.residual(res.samples).norm(dim=1).mean() < 0.5 * problem.residual(free.samples).norm(dim=1).mean()


def test_gmm_samples_closer_to_posterior_than_prior() -> None:
    mix, a, y, problem = _gmm_problem()
    x_init = torch.randn(500, 8, generator=make_generator(4))
    res = SPEC.run(mix.denoiser(), problem, x_init, generator=make_generator(5), config=SPEC.config("fast"))
    exact = mix.posterior(a, y[0], problem.sigma_y).sample(500, make_generator(1))
    prior_samples = mix.sample(500, make_generator(2))
    sw = sliced_wasserstein(res.samples, exact, generator=make_generator(3))
    sw_prior = sliced_wasserstein(prior_samples, exact, generator=make_generator(3))
    assert sw < 0.5 * sw_prior


def test_presets_and_task_gammas() -> None:
    assert DPSConfig() == DPSConfig(n_steps=1000, eta=1.0, gamma=0.1, norm_gradient=False)
    assert SPEC.config("paper-image").gamma == 0.1
    audio = SPEC.config("paper-audio")
    assert (audio.gamma, audio.n_steps) == (1.0, 1000)
    assert SPEC.config("fast").n_steps == 100
    assert DPS_TASK_GAMMA["sr4"] == 1.0 and DPS_TASK_GAMMA["high_dynamic_range"] == 0.07
    assert DPS_TASK_GAMMA["phase_retrieval"] == 0.4 and DPS_TASK_GAMMA["jpeg2"] == 0.2
    assert len(DPS_TASK_GAMMA) == 14


def test_needs_a_problem() -> None:
    mix, _, _ = _gaussian_problem()
    with pytest.raises(UserInputError):
        dps(mix.denoiser(), None, torch.randn(2, 4, dtype=torch.float64), config=DPSConfig(n_steps=5))
