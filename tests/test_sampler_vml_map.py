"""VML-MAP: the closed-form objective and its gradient on a Gaussian prior, the minimiser, the preconditioner,
cost, determinism, input checks and a GMM sanity check."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mgdm_audio.core.denoiser import VEDenoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import LinearOperator, MatrixOperator, Operator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.core.schedules import NoiseLevels
from mgdm_audio.metrics.sliced_wasserstein import sliced_wasserstein
from mgdm_audio.samplers.registry import get_sampler
from mgdm_audio.samplers.vml_map import (
    VMLMAPConfig,
    operator_curvature,
    vml_levels,
    vml_map,
    vml_objective,
    vml_s_gradient,
    vml_s_objective,
)

F64 = torch.float64


class Gaussian:
    """A one-component mixture ``N(mean, v I)``, a matrix ``H`` with chosen singular values, and ``y``."""

    def __init__(
        self,
        n: int = 6,
        singulars: tuple[float, ...] = (1.0, 0.6, 0.3),
        v: float = 0.8,
        sigma_y: float = 0.3,
        seed: int = 0,
        levels: NoiseLevels | None = None,
    ) -> None:
        g = make_generator(seed)
        self.n, self.v, self.sigma_y = n, v, sigma_y
        self.mean = torch.randn(1, n, generator=g, dtype=F64)
        self.mix = GaussianMixture(self.mean, torch.zeros(1, dtype=F64), var=v)
        self.prior = VEDenoiser(self.mix.denoise, levels) if levels is not None else self.mix.denoiser()
        m = len(singulars)
        u, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=F64))
        w, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
        self.h = u @ torch.diag(torch.tensor(singulars, dtype=F64)) @ w[:m]
        self.y = self.h @ self.mean[0] + torch.randn(m, generator=g, dtype=F64)
        self.problem = InverseProblem(MatrixOperator(self.h), self.y[None], sigma_y)
        self.post = self.mix.posterior(self.h, self.y, sigma_y)

    def kl(self, x: Tensor, sigma: float) -> Tensor:
        """Exact ``KL(p(x0 | x_t) || p(x0 | y))`` per chain: ``p(x0 | x_t) = N(D, sigma^2 a I)``."""
        a = self.v / (self.v + sigma**2)
        d = self.mean + a * (x - self.mean)
        s1 = sigma**2 * a * torch.eye(self.n, dtype=F64)
        s2, mu2 = self.post.cov, self.post.means[0]
        s2i = torch.linalg.inv(s2)
        dm = mu2 - d
        quad = ((dm @ s2i) * dm).sum(1)
        return 0.5 * (torch.trace(s2i @ s1) + quad - self.n + torch.logdet(s2) - torch.logdet(s1))

    def c_t(self, sigma: float) -> float:
        m = self.h.shape[0]
        cov_y = self.v * self.h @ self.h.T + self.sigma_y**2 * torch.eye(m, dtype=F64)
        log_py = torch.distributions.MultivariateNormal(self.h @ self.mean[0], cov_y).log_prob(self.y)
        return (
            -(self.n / 2) * math.log(2 * math.pi * sigma**2)
            + (m / 2) * math.log(2 * math.pi * self.sigma_y**2)
            + float(log_py)
        )


@pytest.mark.parametrize("sigma", [0.2, 0.7, 3.0])
def test_gradient_identity_against_autograd_of_explicit_objectives(sigma: float) -> None:
    gs = Gaussian()
    x = 2 * torch.randn(5, gs.n, generator=make_generator(1), dtype=F64)
    grad, d = vml_s_gradient(gs.prior, gs.problem, x, sigma)
    xg = x.clone().requires_grad_(True)
    (g_s,) = torch.autograd.grad(vml_s_objective(gs.prior, gs.problem, xg, sigma, gs.mix.log_prob).sum(), xg)
    xg = x.clone().requires_grad_(True)
    (g_kl,) = torch.autograd.grad(gs.kl(xg, sigma).sum(), xg)  # full VML = KL; trace terms constant here
    assert torch.allclose(grad, g_s, atol=1e-9, rtol=1e-9)
    assert torch.allclose(grad, g_kl, atol=1e-8, rtol=1e-8)
    assert torch.allclose(d, gs.mix.denoise(x, torch.full((5,), sigma, dtype=F64)))


def test_closed_form_vml_equals_exact_kl() -> None:
    gs = Gaussian()
    x = 2 * torch.randn(4, gs.n, generator=make_generator(2), dtype=F64)
    for sigma in (0.3, 1.5):
        full = vml_objective(gs.prior, gs.problem, x, sigma, gs.mix.log_prob)
        assert torch.allclose(full + gs.c_t(sigma), gs.kl(x, sigma), atol=1e-8)
        simplified = vml_s_objective(gs.prior, gs.problem, x, sigma, gs.mix.log_prob) - gs.kl(x, sigma)
        assert float(simplified.max() - simplified.min()) < 1e-9  # VML_S = VML + const for a Gaussian prior


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
def test_minimiser_denoises_to_the_exact_posterior_mean(sigma: float) -> None:
    gs = Gaussian(sigma_y=0.5)
    a = gs.v / (gs.v + sigma**2)
    hess = a / (gs.v + sigma**2) * torch.eye(gs.n, dtype=F64) + a * a * gs.h.T @ gs.h / gs.sigma_y**2
    eig = torch.linalg.eigvalsh(hess)
    step = 2.0 / float(eig.max() + eig.min())
    x = 3 * torch.randn(3, gs.n, generator=make_generator(3), dtype=F64)
    for _ in range(150):
        grad, d = vml_s_gradient(gs.prior, gs.problem, x, sigma)
        x = x - step * grad
    assert float(grad.abs().max()) < 1e-8
    assert torch.allclose(d, gs.post.means.expand(3, -1), atol=1e-7)


def test_sampler_converges_to_the_posterior_mean() -> None:
    gs = Gaussian(sigma_y=0.5)
    x_init = torch.randn(4, gs.n, generator=make_generator(4), dtype=F64)
    for pre in (False, True):
        cfg = VMLMAPConfig(sigmas=(1.0, 0.4), inner_steps=200, preconditioned=pre)
        out = vml_map(gs.prior, gs.problem, x_init, generator=make_generator(5), config=cfg).samples
        assert torch.allclose(out, gs.post.means.expand(4, -1), atol=1e-6)


@pytest.mark.parametrize("preconditioned", [False, True])
def test_update_equations_match_a_manual_recursion(preconditioned: bool) -> None:
    # x <- x - lambda P grad VML_S (K times), hand-off x <- D + sigma_next eps, output D at the last level;
    # lambda = c min(sigma^2, sigma_y^2 / s_max^2), P = V diag(p) V^T, p_i = 1/(lambda (1/sigma^2 + s_i^2/sigma_y^2)).
    gs = Gaussian(singulars=(2.0, 0.5, 0.1), sigma_y=0.4)
    sigmas, c = (3.0, 1.0, 0.3), 0.7
    cfg = VMLMAPConfig(sigmas=sigmas, inner_steps=2, step_scale=c, preconditioned=preconditioned)
    x_init = torch.randn(3, gs.n, generator=make_generator(8), dtype=F64)
    out = vml_map(gs.prior, gs.problem, x_init, generator=make_generator(9), config=cfg).samples
    _, s, vh = torch.linalg.svd(gs.h, full_matrices=True)
    g, x = make_generator(9), sigmas[0] * x_init
    for i, sigma in enumerate(sigmas):
        lam = c * min(sigma**2, gs.sigma_y**2 / 4.0)
        p = torch.ones(gs.n, dtype=F64)
        if preconditioned:
            p[:3] = 1 / (lam * (1 / sigma**2 + s**2 / gs.sigma_y**2))
        precond = vh.T @ torch.diag(p) @ vh
        for _ in range(2):
            grad, _ = vml_s_gradient(gs.prior, gs.problem, x, sigma)
            x = x - lam * grad @ precond.T
        d = gs.prior(x, sigma)
        if i + 1 < len(sigmas):
            x = d + sigmas[i + 1] * torch.randn(x.shape, generator=g, dtype=F64)
    assert torch.allclose(out, d, atol=1e-10)


def test_preconditioner_fixes_ill_conditioned_range() -> None:
    gs = Gaussian(singulars=(1.0, 0.05), sigma_y=0.01)
    x_init = torch.randn(4, gs.n, generator=make_generator(6), dtype=F64)
    pieces = gs.problem.operator.svd()
    errors = []
    for pre in (False, True):
        cfg = VMLMAPConfig(sigmas=(0.3,), inner_steps=30, preconditioned=pre)
        out = vml_map(gs.prior, gs.problem, x_init, generator=make_generator(7), config=cfg).samples
        errors.append(float((pieces.Vt(out - gs.post.means)[:, :2]).abs().max()))
    assert errors[1] < 1e-8 < 1e-2 < errors[0]


@pytest.mark.parametrize(
    ("overrides", "n_levels"),
    [
        ({"sigmas": (2.0, 1.0, 0.5), "inner_steps": 2}, 3),
        ({"n_levels": 5, "inner_steps": 3}, 5),
        ({"n_levels": 4, "inner_steps": 1, "preconditioned": True}, 4),
    ],
)
def test_cost_formula(overrides: dict, n_levels: int) -> None:
    gs = Gaussian()
    cfg = VMLMAPConfig(**overrides)
    res = vml_map(gs.prior, gs.problem, torch.randn(3, gs.n, dtype=F64), generator=make_generator(0), config=cfg)
    k = cfg.inner_steps
    assert (res.nfe, res.vjp) == (n_levels * (k + 1), n_levels * k)
    assert len(res.info["sigmas"]) == n_levels


def test_same_seed_same_samples() -> None:
    gs = Gaussian()
    cfg = VMLMAPConfig(n_levels=6, inner_steps=2)
    x_init = torch.randn(3, gs.n, generator=make_generator(0))
    problem = InverseProblem(MatrixOperator(gs.h.float()), gs.y[None].float(), gs.sigma_y)
    runs = [vml_map(gs.prior, problem, x_init, generator=make_generator(s), config=cfg).samples for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


class Doubling(LinearOperator):
    """``A x = 2 x`` with an adjoint but no SVD pieces."""

    def forward(self, x: Tensor) -> Tensor:
        return 2 * x

    def adjoint(self, y: Tensor) -> Tensor:
        return 2 * y


def test_bad_inputs() -> None:
    gs = Gaussian()
    x = torch.randn(2, gs.n, dtype=F64)
    problem = InverseProblem(Doubling(), torch.zeros(1, gs.n, dtype=F64), 0.1)
    with pytest.raises(UserInputError, match="SVD"):
        vml_map(gs.prior, problem, x, config=VMLMAPConfig(preconditioned=True))
    with pytest.raises(UserInputError):
        vml_map(gs.prior, None, x)
    with pytest.raises(UserInputError):
        vml_map(gs.prior, gs.problem, x, config=VMLMAPConfig(inner_steps=0))
    with pytest.raises(UserInputError):
        vml_map(gs.prior, gs.problem, x, config=VMLMAPConfig(sigmas=(1.0, 2.0)))
    with pytest.raises(UserInputError):
        vml_map(gs.prior, gs.problem, x, config=VMLMAPConfig(step_scale=-1.0))


def test_levels_and_curvature() -> None:
    gs = Gaussian(levels=NoiseLevels.karras(0.01, 50.0, n=100))
    sig = vml_levels(gs.prior, VMLMAPConfig(n_levels=10))
    assert sig[0] == pytest.approx(50.0) and sig[-1] == pytest.approx(0.01) and len(sig) == 10
    assert all(b < a for a, b in zip(sig, sig[1:], strict=False))
    sig = vml_levels(gs.prior, VMLMAPConfig(n_levels=10, sigma_max=1e3, sigma_min=1.0))
    assert (sig[0], sig[-1]) == pytest.approx((50.0, 1.0))
    assert vml_levels(gs.prior, VMLMAPConfig(sigmas=(80.0, 1.0, 1e-3))) == pytest.approx([50.0, 1.0, 0.01])
    assert operator_curvature(gs.problem, (gs.n,)) == pytest.approx(1.0)
    problem = InverseProblem(Doubling(), torch.zeros(1, gs.n, dtype=F64), 0.1)
    assert operator_curvature(problem, (gs.n,)) == pytest.approx(4.0)


def test_nonlinear_operator_path_matches_linear() -> None:
    gs = Gaussian()

    class Wrapped(Operator):
        def forward(self, x: Tensor) -> Tensor:
            return gs.problem.operator(x)

    other = InverseProblem(Wrapped(), gs.problem.y, gs.sigma_y)
    cfg = VMLMAPConfig(n_levels=5, inner_steps=2, data_curvature=1.0)
    x_init = torch.randn(3, gs.n, generator=make_generator(0), dtype=F64)
    a = vml_map(gs.prior, gs.problem, x_init, generator=make_generator(1), config=cfg)
    b = vml_map(gs.prior, other, x_init, generator=make_generator(1), config=cfg)
    assert (b.nfe, b.vjp) == (a.nfe, a.vjp) == (15, 10)
    assert torch.allclose(a.samples, b.samples, atol=1e-10)


def test_tiny_sigma_y_stays_finite_and_fits_the_data() -> None:
    gs = Gaussian(sigma_y=1e-9)
    problem = InverseProblem(MatrixOperator(gs.h.float()), gs.y[None].float(), 1e-9)
    residuals = []
    for pre in (False, True):
        cfg = VMLMAPConfig(n_levels=10, inner_steps=4, preconditioned=pre)
        out = vml_map(gs.prior, problem, torch.randn(3, gs.n, generator=make_generator(0)), config=cfg).samples
        assert bool(torch.isfinite(out).all())
        residuals.append(float((out.double() @ gs.h.T - gs.y).abs().max()))
    assert residuals[1] < 1e-3


def test_registry_presets() -> None:
    spec = get_sampler("vml_map")
    assert spec.config("paper-image") == VMLMAPConfig()
    assert (VMLMAPConfig().n_levels, VMLMAPConfig().inner_steps) == (50, 4)
    fast = spec.config("fast")
    assert (fast.n_levels, fast.inner_steps) == (20, 2)
    assert spec.config("paper-audio").n_levels == 100
    assert not spec.needs_svd and not spec.needs_linear


def test_gmm_posterior_closer_than_prior() -> None:
    g = make_generator(5)
    mix = GaussianMixture.grid25(8, g)
    a = torch.randn(1, 8, generator=g, dtype=F64)
    a = a / a.norm()
    x = mix.sample(1, g)
    y = x @ a.T + 0.05 * torch.randn(1, 1, generator=g, dtype=F64)
    ref = mix.posterior(a, y, 0.05).sample(500, g)
    problem = InverseProblem(MatrixOperator(a.float()), y.float(), 0.05)
    cfg = get_sampler("vml_map").config("fast")
    res = vml_map(
        mix.denoiser(),
        problem,
        torch.randn(300, 8, generator=make_generator(1)),
        generator=make_generator(2),
        config=cfg,
    )
    sw = sliced_wasserstein(res.samples, ref, generator=make_generator(7))
    sw_prior = sliced_wasserstein(mix.sample(300, g), ref, generator=make_generator(7))
    assert sw < 0.5 * sw_prior
