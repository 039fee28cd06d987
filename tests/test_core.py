"""Core math against closed forms: schedules, bridge kernel, denoiser adapters, operators."""

import math

import pytest
import torch

from mgdm_audio.core import (
    CountingDenoiser,
    InternalError,
    MatrixOperator,
    NoiseLevels,
    UserInputError,
    VEDenoiser,
    VPEpsDenoiser,
    VPVDenoiser,
    bridge_coefficients,
    ddim_step,
    karras_sigmas,
    sample_bridge,
    vp_denoise,
)
from mgdm_audio.core.bridge import sample_bridge_ve
from mgdm_audio.core.gmm import GaussianMixture, gmm_noise_levels
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.schedules import abar_to_sigma, linear_beta_alphas_cumprod, sigma_to_abar


def test_abar_sigma_round_trip():
    s = torch.tensor([1e-3, 0.1, 1.0, 20.0, 150.0], dtype=torch.float64)
    assert torch.allclose(abar_to_sigma(sigma_to_abar(s)), s, rtol=1e-12)


def test_karras_grid_endpoints_and_errors():
    g = karras_sigmas(10, 0.002, 80.0, 7.0)
    assert g[0].item() == pytest.approx(80.0) and g[-1].item() == pytest.approx(0.002)
    assert torch.all(g[1:] < g[:-1])
    with pytest.raises(UserInputError, match="sigma_min < sigma_max"):
        karras_sigmas(10, 5.0, 1.0)
    with pytest.raises(UserInputError):
        NoiseLevels.karras(20.0, 20.0)


def test_audio_karras_levels_match_reference_values():
    # the MGDM reference's sound-model levels: Karras(5e-4, 20, rho=3, 1000) + 0, reversed.
    lv = NoiseLevels.karras(5e-4, 20.0, rho=3.0, n=1000)
    assert lv.abar[1000].item() == pytest.approx(1 / 401, rel=1e-9)
    assert lv.sigmas[52].item() == pytest.approx(0.00979, rel=2e-3)
    assert lv.sigmas[262].item() == pytest.approx(0.4526, rel=1e-3)
    assert lv.sigmas[525].item() == pytest.approx(3.12, rel=2e-3)


def test_timesteps_grid_matches_reference():
    lv = gmm_noise_levels()
    expected = [0, 52, 105, 157, 210, 262, 315, 368, 420, 473, 525, 578, 630, 683, 736, 788, 841, 893, 946, 999]
    assert lv.timesteps(20).tolist() == expected
    t100 = lv.timesteps(100).tolist()
    assert t100[:12] == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 111] and t100[-1] == 999


def test_index_of_inverts_table():
    lv = gmm_noise_levels()
    k = torch.tensor([1, 10, 500, 999, 1000])
    assert torch.allclose(lv.index_of(lv.sigmas[k]), k.double(), atol=1e-9)
    assert lv.index_of(torch.tensor(0.0)).item() == 0.0


def ddpm_posterior(abar_t, abar_l):
    """Closed-form q(x_t | x_0, x_l) of DDPM: coefficients of x_l and x_0, and the variance."""
    a_tl = abar_l / abar_t
    c_l = math.sqrt(a_tl) * (1 - abar_t) / (1 - abar_l)
    c_0 = math.sqrt(abar_t) * (1 - a_tl) / (1 - abar_l)
    var = (1 - abar_t) * (1 - a_tl) / (1 - abar_l)
    return c_0, c_l, var


@pytest.mark.parametrize("abar_t,abar_l", [(0.9, 0.5), (0.3, 0.01), (0.999, 0.998)])
def test_bridge_matches_ddpm_posterior(abar_t, abar_l):
    c_s, c_l, std = bridge_coefficients(1.0, abar_t, abar_l, 1.0)
    c0, cl, var = ddpm_posterior(abar_t, abar_l)
    assert c_s.item() == pytest.approx(c0, rel=1e-10)
    assert c_l.item() == pytest.approx(cl, rel=1e-10)
    assert std.item() ** 2 == pytest.approx(var, rel=1e-10)


def test_bridge_is_the_exact_conditional_of_the_forward_chain():
    # Monte Carlo: x_s fixed, x_t ~ q(x_t|x_s), x_l ~ q(x_l|x_t). Regress x_t on x_l: slope c_l, residual std.
    g = torch.Generator().manual_seed(0)
    a_s, a_t, a_l = 0.8, 0.4, 0.1
    n = 400_000
    x_s = 1.5
    x_t = math.sqrt(a_t / a_s) * x_s + math.sqrt(1 - a_t / a_s) * torch.randn(n, generator=g, dtype=torch.float64)
    x_l = math.sqrt(a_l / a_t) * x_t + math.sqrt(1 - a_l / a_t) * torch.randn(n, generator=g, dtype=torch.float64)
    c_s, c_l, std = bridge_coefficients(a_s, a_t, a_l, 1.0)
    resid = x_t - (c_l * x_l + c_s * x_s)
    assert resid.mean().item() == pytest.approx(0.0, abs=5e-3)
    assert resid.std().item() == pytest.approx(std.item(), rel=5e-3)
    assert torch.corrcoef(torch.stack([resid, x_l]))[0, 1].abs().item() < 5e-3


def test_bridge_degenerate_cases():
    g = torch.Generator().manual_seed(1)
    x_s, x_l = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    assert torch.allclose(sample_bridge(x_s, x_l, 0.9, 0.9, 0.2, 1.0, g), x_s, atol=1e-6)  # t = s
    assert torch.allclose(sample_bridge(x_s, x_l, 0.9, 0.2, 0.2, 1.0, g), x_l, atol=1e-6)  # t = l
    c_s, c_l, std = bridge_coefficients(1.0, 0.5, 0.1, 0.0)  # DDIM: deterministic
    assert std.item() == 0.0
    assert c_l.item() == pytest.approx(math.sqrt(0.5 / 0.9), rel=1e-10)


def test_bridge_per_chain_levels():
    g = torch.Generator().manual_seed(2)
    x_s, x_l = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    a_t = torch.tensor([0.9, 0.2], dtype=torch.float64)
    both = sample_bridge(x_s, x_l, 1.0, a_t, 0.1, 0.0, None)
    for b in range(2):
        one = sample_bridge(x_s[b : b + 1], x_l[b : b + 1], 1.0, float(a_t[b]), 0.1, 0.0, None)
        assert torch.allclose(both[b : b + 1], one, atol=1e-6)


def test_ve_and_vp_bridges_agree():
    sig = (0.3, 1.2, 5.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x_s, x_l = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64) * 5
    ve = sample_bridge_ve(x_s, x_l, *sig, 0.7, g1)
    a = [1 / (1 + s**2) for s in sig]
    vp = sample_bridge(x_s * math.sqrt(a[0]), x_l * math.sqrt(a[2]), *a, 0.7, g2)
    assert torch.allclose(ve * math.sqrt(a[1]), vp, atol=1e-12)
    # VE closed form with eta = 1: mean x_s + (s_t^2 - s_s^2)/(s_l^2 - s_s^2) (x_l - x_s)
    mean = sample_bridge_ve(x_s, x_l, sig[0], sig[1], sig[2], 0.0, None)
    c = math.sqrt((sig[1] ** 2 - sig[0] ** 2) / (sig[2] ** 2 - sig[0] ** 2))
    assert torch.allclose(mean, x_s + c * (x_l - x_s), atol=1e-12)


def test_ddim_to_clean_returns_denoiser_output():
    g = torch.Generator().manual_seed(4)
    x, x0 = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    for eta in (0.0, 0.5, 1.0):
        assert torch.allclose(ddim_step(x, x0, 0.3, 1.0, eta, g), x0, atol=1e-6)


def test_bridge_rejects_bad_eta():
    with pytest.raises(UserInputError, match="eta"):
        bridge_coefficients(1.0, 0.5, 0.1, 1.5)


def mixture_2d():
    g = torch.Generator().manual_seed(5)
    return GaussianMixture.grid25(4, g)


def test_gmm_denoiser_equals_tweedie_by_autodiff():
    mix = mixture_2d()
    g = torch.Generator().manual_seed(6)
    for sigma in (0.05, 1.0, 7.0, 60.0):
        x = (mix.sample(16, g) + sigma * torch.randn(16, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
        (score,) = torch.autograd.grad(mix.log_prob(x, sigma).sum(), x)
        tweedie = x + sigma**2 * score
        d = mix.denoise(x.detach(), torch.full((16,), sigma, dtype=torch.float64))
        assert torch.allclose(d, tweedie, atol=1e-8 * max(1.0, sigma**2)), sigma


def test_gmm_posterior_is_prior_times_likelihood():
    mix = mixture_2d()
    g = torch.Generator().manual_seed(7)
    a = torch.randn(2, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([3.0, -2.0], dtype=torch.float64)
    sy = 0.7
    post = mix.posterior(a, y, sy)
    x = 10 * torch.randn(50, 4, generator=g, dtype=torch.float64)
    chol = torch.linalg.cholesky(post.cov)
    diff = x[:, None, :] - post.means[None]
    sol = torch.cholesky_solve(diff.reshape(-1, 4).T, chol).T.reshape(diff.shape)
    log_post = (post.log_weights - 0.5 * (diff * sol).sum(-1)).logsumexp(1)
    log_joint = mix.log_prob(x) - ((x @ a.T - y) ** 2).sum(1) / (2 * sy**2)
    gap = log_post - log_joint
    assert torch.allclose(gap, gap[0].expand_as(gap), atol=1e-8)
    assert post.log_weights.exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def analytic_ve():
    mix = mixture_2d()
    return mix, mix.denoise


def test_vp_eps_adapter_reproduces_ve_denoiser():
    mix, d_ve = analytic_ve()
    abar_model = linear_beta_alphas_cumprod(1000)
    sig_model = abar_to_sigma(abar_model)

    def eps_net(x_vp, t):  # an exact eps network at integer model steps t
        s = sig_model[t.round().long()].to(x_vp)[:, None]
        x_ve = x_vp * torch.sqrt(1 + s**2)
        return (x_ve - d_ve(x_ve, s[:, 0])) / s

    adapter = VPEpsDenoiser(eps_net, abar_model)
    g = torch.Generator().manual_seed(8)
    x0 = mix.sample(8, g)
    for k in (1, 10, 500, 999):
        s = float(adapter.levels.sigmas[k])
        x = x0 + s * torch.randn(8, 4, generator=g, dtype=torch.float64)
        assert torch.allclose(adapter(x, s), d_ve(x, torch.full((8,), s, dtype=torch.float64)), atol=1e-8)
    quirk = VPEpsDenoiser(eps_net, abar_model, reference_index_offset=True)
    s = float(adapter.levels.sigmas[10])
    x = x0 + s * torch.randn(8, 4, generator=g, dtype=torch.float64)
    assert not torch.allclose(quirk(x, s), adapter(x, s), atol=1e-6)


def test_vp_v_adapter_and_vp_denoise():
    mix, d_ve = analytic_ve()
    abar_model = linear_beta_alphas_cumprod(1000)

    def v_net(x_vp, t):
        a = abar_model[t.round().long()].to(x_vp)[:, None]
        x_ve = x_vp / a.sqrt()
        x0 = d_ve(x_ve, torch.sqrt((1 - a) / a)[:, 0])
        eps = (x_vp - a.sqrt() * x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    adapter = VPVDenoiser(v_net, abar_model)
    g = torch.Generator().manual_seed(9)
    k = 300
    a = adapter.levels.abar[k]
    x_vp = a.sqrt() * mix.sample(5, g) + (1 - a).sqrt() * torch.randn(5, 4, generator=g, dtype=torch.float64)
    expected = d_ve(x_vp / a.sqrt(), torch.full((5,), float(adapter.levels.sigmas[k]), dtype=torch.float64))
    assert torch.allclose(vp_denoise(adapter, x_vp, a), expected, atol=1e-8)


def test_counting_denoiser_counts_forwards_and_vjps():
    mix = mixture_2d()
    counter = CountingDenoiser(mix.denoiser())
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    out = counter(x, 1.0)
    counter(x.detach(), 2.0)
    (out**2).sum().backward()
    assert (counter.nfe, counter.vjp) == (2, 1)
    stacked = CountingDenoiser(mix.denoiser(), unit_batch=3)  # a call on k * B chains costs k units
    out = stacked(torch.randn(9, 4, dtype=torch.float64, requires_grad=True), 1.0)
    stacked(torch.randn(3, 4, dtype=torch.float64), 1.0)
    (out**2).sum().backward()
    assert (stacked.nfe, stacked.vjp) == (4, 3)


def test_matrix_operator_adjoint_svd_and_pinv():
    g = torch.Generator().manual_seed(10)
    a = torch.randn(3, 6, generator=g, dtype=torch.float64)
    op = MatrixOperator(a)
    x, y = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    assert torch.allclose((op(x) * y).sum(1), (x * op.adjoint(y)).sum(1), atol=1e-10)
    svd = op.svd()
    c = svd.Vt(x)
    assert torch.allclose(svd.V(c), x, atol=1e-10)
    coeff = torch.zeros(4, 3, dtype=torch.float64)
    coeff[:, : svd.rank] = svd.singulars * c[:, : svd.rank]
    assert torch.allclose(svd.U(coeff), op(x), atol=1e-10)
    assert torch.allclose(op.pinv(y), y @ torch.linalg.pinv(a).T, atol=1e-10)


def test_inverse_problem_rejects_bad_input():
    op = MatrixOperator(torch.eye(3))
    with pytest.raises(UserInputError, match="NaN"):
        InverseProblem(op, torch.tensor([[1.0, float("nan"), 0.0]]), 0.1)
    with pytest.raises(UserInputError, match="sigma_y"):
        InverseProblem(op, torch.zeros(1, 3), 0.0)
    problem = InverseProblem(op, torch.zeros(1, 3), 0.1)
    with pytest.raises(UserInputError, match="shape"):
        problem.check_shape(torch.zeros(2, 4))
    lin = problem.grad_log_likelihood(torch.ones(2, 3))
    assert torch.allclose(lin, -torch.ones(2, 3) / 0.01)


def test_ve_denoiser_accepts_scalar_and_per_chain_sigma():
    mix = mixture_2d()
    den = mix.denoiser()
    x = torch.randn(3, 4, dtype=torch.float64)
    assert torch.allclose(den(x, 2.0), den(x, torch.full((3,), 2.0)))
    with pytest.raises(InternalError, match="sigma"):  # a sampler's bug, not the user's input
        den(x, torch.ones(2))
    assert isinstance(den, VEDenoiser)


def test_keep_freed_memory_sets_glibc_thresholds():
    import platform
    import sys

    from mgdm_audio.core.runtime import keep_freed_memory

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected


def test_group_adam_matches_torch_adam():
    from mgdm_audio.core.optim import GroupAdam

    g = torch.Generator().manual_seed(0)
    grads = [(torch.randn(3, 2, 8, generator=g), torch.randn(3, 2, 8, generator=g)) for _ in range(5)]
    a, b = torch.zeros(3, 2, 8), torch.ones(3, 2, 8)
    ref = torch.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.03}], lr=0.2, fused=True)
    ours_a, ours_b = a.clone(), b.clone()
    ours = GroupAdam([(ours_a, 0.2), (ours_b, 0.03)])
    slow_a, slow_b = a.clone(), b.clone()
    slow = GroupAdam([(slow_a, 0.2), (slow_b, 0.03)])
    slow.fused = False  # the path for devices without the fused kernel
    for ga, gb in grads:
        a.grad, b.grad = ga.clone(), gb.clone()
        ref.step()
        ours.step([ga.clone(), gb.clone()])
        slow.step([ga.clone(), gb.clone()])
    assert torch.equal(ours_a, a) and torch.equal(ours_b, b)  # the same fused kernel: the same numbers
    torch.testing.assert_close(slow_a, a)
    torch.testing.assert_close(slow_b, b)
