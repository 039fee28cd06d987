"""ΠGDM: exact cost, determinism, the V-basis reference loop, closed forms on a Gaussian prior, the identity
pseudo-inverse variant, and a GMM sanity check."""

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
from mgdm_audio.samplers.pigdm import SPEC, PiGDMConfig, pigdm

LEVELS = gmm_noise_levels()


def _gaussian(d: int, var: float = 1.0) -> GaussianMixture:
    return GaussianMixture(torch.zeros(1, d, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), var)


def _linear_problem(mix: GaussianMixture, d_y: int, sigma_y: float, seed: int) -> tuple[Tensor, InverseProblem]:
    g = make_generator(seed)
    a = torch.randn(d_y, mix.dim, generator=g, dtype=torch.float64)
    y = mix.sample(1, g) @ a.T + sigma_y * torch.randn(1, d_y, generator=g, dtype=torch.float64)
    return a, InverseProblem(MatrixOperator(a), y, sigma_y)


def _ddim_coefficients(ak: float, an: float) -> tuple[float, float, float]:
    """``(c_l, c_0, std)`` of the DDIM(eta=1) step ``k -> k'`` (the bridge kernel with s = 0)."""
    std = math.sqrt((1 - ak / an) * (1 - an) / (1 - ak))
    c_l = math.sqrt((1 - an - std**2) / (1 - ak))
    return c_l, math.sqrt(an) - c_l * math.sqrt(ak), std


class _Tanh(Operator):
    """A nonlinear, shape-preserving operator with no SVD: ``A(x) = tanh(x)``."""

    x_shape = (4,)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


@pytest.mark.parametrize("n_steps", [3, 6, 11])
@pytest.mark.parametrize("pseudo_inverse", ["svd", "identity"])
def test_cost_is_n_minus_1_nfe_and_n_minus_2_vjp(n_steps: int, pseudo_inverse: str) -> None:
    mix = _gaussian(4)
    _, problem = _linear_problem(mix, 4, 0.2, seed=0)
    x_init = torch.randn(3, 4, generator=make_generator(1), dtype=torch.float64)
    cfg = PiGDMConfig(n_steps=n_steps, pseudo_inverse=pseudo_inverse)  # type: ignore[arg-type]
    res = pigdm(mix.denoiser(), problem, x_init, generator=make_generator(2), config=cfg)
    assert (res.nfe, res.vjp) == (n_steps - 1, n_steps - 2)
    assert res.samples.shape == x_init.shape and torch.all(torch.isfinite(res.samples))


def test_same_seed_same_samples_and_other_seed_differs() -> None:
    mix = GaussianMixture.grid25(8, make_generator(0))
    a = torch.randn(2, 8, generator=make_generator(1))
    problem = InverseProblem(MatrixOperator(a), torch.randn(1, 2, generator=make_generator(2)), 0.1)
    x_init = torch.randn(16, 8, generator=make_generator(3))
    cfg = PiGDMConfig(n_steps=20)
    runs = [pigdm(mix.denoiser(), problem, x_init, generator=make_generator(s), config=cfg).samples for s in (4, 4, 5)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_matches_reference_v_basis_loop() -> None:
    """The reference's ``pgdm.py`` run in the V-basis as it does (x̄ = Vᵀx, denoiser Vᵀ D(V x̄), noise Vᵀz) equals this
    module's original-basis run mapped back by V, on the nonlinear mixture denoiser."""
    d, d_y, n_steps, sigma_y = 8, 3, 9, 0.2
    mix = GaussianMixture.grid25(d, make_generator(0))
    a = torch.randn(d_y, d, generator=make_generator(1), dtype=torch.float64)
    y = mix.sample(1, make_generator(2)) @ a.T
    problem = InverseProblem(MatrixOperator(a), y, sigma_y)
    x_init = torch.randn(5, d, generator=make_generator(3), dtype=torch.float64)
    got = pigdm(mix.denoiser(), problem, x_init, generator=make_generator(4), config=PiGDMConfig(n_steps=n_steps))

    pieces = problem.operator.svd()
    s, rank = pieces.singulars, pieces.rank
    ut_y = pieces.Ut(y)[:, :rank]
    abar, ts = LEVELS.abar, LEVELS.timesteps(n_steps)

    def denoise_bar(xb: Tensor, ak: float) -> Tensor:
        sigma = torch.full((xb.shape[0],), math.sqrt((1 - ak) / ak), dtype=torch.float64)
        return pieces.Vt(mix.denoise(pieces.V(xb) / math.sqrt(ak), sigma))

    g = make_generator(4)
    xb = pieces.Vt(x_init)
    for i in range(n_steps - 1, 1, -1):
        ak, an = float(abar[ts[i]]), float(abar[ts[i - 1]])
        xg = xb.clone().requires_grad_(True)
        x0b = denoise_bar(xg, ak)
        pot = -0.5 * ((ut_y - s * x0b[:, :rank]) ** 2 / (s**2 + sigma_y**2 / (1 - ak))).sum()
        (grad,) = torch.autograd.grad(pot, xg)
        c_l, c_0, std = _ddim_coefficients(ak, an)
        z = torch.randn(x_init.shape, generator=g, dtype=torch.float64)
        xb = c_l * xb + c_0 * x0b.detach() + std * pieces.Vt(z) + math.sqrt(an * ak) * grad
    want = pieces.V(denoise_bar(xb, float(abar[ts[1]])))
    torch.testing.assert_close(got.samples, want, rtol=1e-9, atol=1e-9)


def _pigdm_gaussian_law(a: Tensor, y: Tensor, sigma_y: float, n_steps: int) -> tuple[Tensor, Tensor]:
    """The exact law of ΠGDM's output for the prior N(0, I) and ``y = A x + noise``, unit start.

    ``D_k(x) = sqrt(abar_k) x`` is linear, so each step is ``x' = M x + b + std z`` with
    ``M = (c_l + c_0 c) I - w c^2 V_r diag(s^2 / v) V_r^T``, ``b = w c V_r diag(s / v) U_r^T y``,
    ``c = sqrt(abar_k)``, ``v = s^2 + sigma_y^2 / (1 - abar_k)``, ``w = sqrt(abar_k' abar_k)``; mean and
    covariance propagate exactly (float64).
    """
    d = a.shape[1]
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    v_r, u_y = vh.T, u.T @ y.reshape(-1)
    abar, ts = LEVELS.abar, LEVELS.timesteps(n_steps)
    eye = torch.eye(d, dtype=torch.float64)
    mean, cov = torch.zeros(d, dtype=torch.float64), eye.clone()
    for i in range(n_steps - 1, 1, -1):
        ak, an = float(abar[ts[i]]), float(abar[ts[i - 1]])
        c, w = math.sqrt(ak), math.sqrt(an * ak)
        c_l, c_0, std = _ddim_coefficients(ak, an)
        v = s**2 + sigma_y**2 / (1 - ak)
        m = (c_l + c_0 * c) * eye - w * c * c * v_r @ torch.diag(s**2 / v) @ v_r.T
        mean = m @ mean + w * c * v_r @ (s * u_y / v)
        cov = m @ cov @ m.T + std**2 * eye
    c1 = math.sqrt(float(abar[ts[1]]))
    return c1 * mean, c1 * c1 * cov


def _assert_moments(samples: Tensor, mean: Tensor, cov: Tensor, n_se: float) -> None:
    """Sample mean and covariance within ``n_se`` Monte Carlo standard errors of ``(mean, cov)``:
    ``se(mean_i) = sqrt(C_ii / B)``, ``se(C_ij) = sqrt((C_ii C_jj + C_ij^2) / B)`` (Gaussian samples)."""
    b = samples.shape[0]
    diag = cov.diagonal()
    se_mean = (diag / b).sqrt()
    se_cov = ((diag[:, None] * diag[None, :] + cov**2) / b).sqrt()
    assert torch.all((samples.mean(0) - mean).abs() <= n_se * se_mean), (samples.mean(0), mean)
    assert torch.all((samples.T.cov() - cov).abs() <= n_se * se_cov), (samples.T.cov(), cov)


def test_gaussian_prior_samples_follow_the_closed_form_law() -> None:
    """A weakly informative case with a coarse grid (N = 20), where ΠGDM's law is far from the posterior (it is
    under-dispersed): the samples must follow ΠGDM's own closed-form law to 5 Monte Carlo standard errors (B = 4000)."""
    mix = _gaussian(4)
    a, problem = _linear_problem(mix, 2, 0.5, seed=1)
    mean, cov = _pigdm_gaussian_law(a, problem.y, 0.5, n_steps=20)
    x_init = torch.randn(4000, 4, generator=make_generator(2), dtype=torch.float64)
    res = pigdm(mix.denoiser(), problem, x_init, generator=make_generator(3), config=PiGDMConfig(n_steps=20))
    _assert_moments(res.samples, mean, cov, n_se=5.0)
    # the check discriminates: exact posterior samples would miss this law's covariance by > 10 standard errors
    post = mix.posterior(a, problem.y[0], 0.5)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / 4000).sqrt()
    assert ((cov - post.cov).abs() / se_cov).max() > 10


def test_gaussian_prior_informative_observation_matches_exact_posterior() -> None:
    """Prior N(0, I), d = 4, one observation with sigma_y = 0.1: ΠGDM's Gaussian likelihood uses
    ``r_k^2 = 1 - abar_k``, the exact posterior variance of x0 | x_k under this prior. The remaining bias of
    its law (finite N: null-space variance 0.991 instead of 1; guidance weight: variance along the observed
    direction 0.001 instead of 0.011) is first shown, in closed form, to be below 1 standard error at B = 2000;
    the samples must then match the exact posterior to 5 standard errors."""
    mix = _gaussian(4)
    a, problem = _linear_problem(mix, 1, 0.1, seed=1)
    post = mix.posterior(a, problem.y[0], 0.1)
    b, n_steps = 2000, 1000
    se_mean = (post.cov.diagonal() / b).sqrt()
    se_cov = ((post.cov.diagonal()[:, None] * post.cov.diagonal()[None, :] + post.cov**2) / b).sqrt()
    law_mean, law_cov = _pigdm_gaussian_law(a, problem.y, 0.1, n_steps)
    assert torch.all((law_mean - post.means[0]).abs() <= se_mean)
    assert torch.all((law_cov - post.cov).abs() <= se_cov)
    x_init = torch.randn(b, 4, generator=make_generator(2), dtype=torch.float64)
    res = pigdm(mix.denoiser(), problem, x_init, generator=make_generator(3), config=PiGDMConfig(n_steps=n_steps))
    _assert_moments(res.samples, post.means[0], post.cov, n_se=5.0)


def test_null_space_carries_no_likelihood_term() -> None:
    """Under an isotropic Gaussian prior the V-coordinates decouple, so beyond the rank ΠGDM's output equals
    unguided DDIM(eta=1) from the same noise."""
    mix = _gaussian(5, var=2.0)
    a, problem = _linear_problem(mix, 2, 0.1, seed=4)
    x_init = torch.randn(6, 5, generator=make_generator(1), dtype=torch.float64)
    guided = pigdm(mix.denoiser(), problem, x_init, generator=make_generator(2), config=PiGDMConfig(n_steps=12))
    free = ddim_module.ddim(
        mix.denoiser(), None, x_init, generator=make_generator(2), config=ddim_module.DDIMConfig(n_steps=12)
    )
    pieces = problem.operator.svd()
    vg, vf = pieces.Vt(guided.samples), pieces.Vt(free.samples)
    torch.testing.assert_close(vg[:, 2:], vf[:, 2:], rtol=1e-10, atol=1e-10)
    assert (vg[:, :2] - vf[:, :2]).abs().max() > 1e-2


def test_identity_pseudo_inverse_matches_reference_loop() -> None:
    """JPEG-style variant on N(0, var I) with a masking matrix: potential <stopgrad(y - A x̂0), x̂0>, so the
    gradient is ``c_k (y - A x̂0)``, weighted by ``sqrt(abar_k)``."""
    var, n_steps = 2.0, 8
    mix = _gaussian(4, var)
    mask = torch.diag(torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    y = torch.tensor([[0.5, 0.0, -1.0, 2.0]], dtype=torch.float64)
    problem = InverseProblem(MatrixOperator(mask), y, 0.05)
    x_init = torch.randn(5, 4, generator=make_generator(1), dtype=torch.float64)
    cfg = PiGDMConfig(n_steps=n_steps, pseudo_inverse="identity")
    got = pigdm(mix.denoiser(), problem, x_init, generator=make_generator(2), config=cfg, start_scale="vp").samples

    abar, ts = LEVELS.abar, LEVELS.timesteps(n_steps)
    g = make_generator(2)
    x = x_init * math.sqrt(1 - float(abar[ts[-1]]))
    for i in range(n_steps - 1, 1, -1):
        ak, an = float(abar[ts[i]]), float(abar[ts[i - 1]])
        c = math.sqrt(ak) * var / (ak * var + 1 - ak)
        x0 = c * x
        grad = c * (y - x0 @ mask.T)
        c_l, c_0, std = _ddim_coefficients(ak, an)
        x = c_l * x + c_0 * x0 + std * torch.randn(x.shape, generator=g, dtype=x.dtype) + math.sqrt(ak) * grad
    a1 = float(abar[ts[1]])
    torch.testing.assert_close(got, math.sqrt(a1) * var / (a1 * var + 1 - a1) * x, rtol=1e-10, atol=1e-10)


def test_operator_without_svd_needs_the_identity_flag() -> None:
    assert SPEC.needs_svd
    mix = _gaussian(4)
    problem = InverseProblem(_Tanh(), torch.tensor([[0.5, -0.2, 0.9, 0.0]], dtype=torch.float64), 0.05)
    x_init = torch.randn(4, 4, generator=make_generator(1), dtype=torch.float64)
    with pytest.raises(UserInputError, match="pseudo_inverse='identity'"):
        pigdm(mix.denoiser(), problem, x_init, config=PiGDMConfig(n_steps=5))
    res = pigdm(
        mix.denoiser(),
        problem,
        x_init,
        generator=make_generator(2),
        config=PiGDMConfig(n_steps=5, pseudo_inverse="identity"),
    )
    assert (res.nfe, res.vjp) == (4, 3) and torch.all(torch.isfinite(res.samples))


def test_identity_variant_rejects_mismatched_shapes_and_unknown_values() -> None:
    mix = _gaussian(4)
    _, problem = _linear_problem(mix, 2, 0.1, seed=0)
    x_init = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(UserInputError, match="same size"):
        pigdm(mix.denoiser(), problem, x_init, config=PiGDMConfig(n_steps=5, pseudo_inverse="identity"))
    with pytest.raises(UserInputError, match="pseudo_inverse"):
        pigdm(mix.denoiser(), problem, x_init, config=PiGDMConfig(n_steps=5, pseudo_inverse="pinv"))  # type: ignore[arg-type]
    with pytest.raises(UserInputError):
        pigdm(mix.denoiser(), None, x_init, config=PiGDMConfig(n_steps=5))


def test_gmm_samples_closer_to_posterior_than_prior() -> None:
    g = make_generator(5)
    mix = GaussianMixture.grid25(8, g)
    a = torch.randn(1, 8, generator=g, dtype=torch.float64)
    y = mix.sample(1, g) @ a.T + 0.05 * torch.randn(1, 1, generator=g, dtype=torch.float64)
    problem = InverseProblem(MatrixOperator(a.float()), y.float(), 0.05)
    x_init = torch.randn(500, 8, generator=make_generator(4))
    res = SPEC.run(mix.denoiser(), problem, x_init, generator=make_generator(5), config=SPEC.config("fast"))
    exact = mix.posterior(a, y[0], 0.05).sample(500, make_generator(1))
    sw = sliced_wasserstein(res.samples, exact, generator=make_generator(3))
    sw_prior = sliced_wasserstein(mix.sample(500, make_generator(2)), exact, generator=make_generator(3))
    assert sw < 0.5 * sw_prior


def test_presets() -> None:
    assert PiGDMConfig() == PiGDMConfig(n_steps=1000, eta=1.0, pseudo_inverse="svd")
    assert SPEC.config("paper-image") == PiGDMConfig()
    audio = SPEC.config("paper-audio")
    assert (audio.n_steps, audio.pseudo_inverse) == (1000, "svd")
    assert SPEC.config("fast").n_steps == 100
