"""MGDM: the reference code's cost formulas, tau rules, step rules, determinism, posterior sanity."""

import math

import pytest
import torch
from torch import Tensor

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture, random_measurement
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator
from mgdm_audio.metrics import sliced_wasserstein
from mgdm_audio.samplers.base import StepRule, schedule_value
from mgdm_audio.samplers.mgdm import MGDMConfig, draw_tau
from mgdm_audio.samplers.registry import get_sampler

SPEC = get_sampler("mgdm")


def gmm_problem(dim=8, seed=0, informative=True):
    g = torch.Generator().manual_seed(seed)
    mix = GaussianMixture.grid25(dim, g)
    a, sy = random_measurement(dim, 1, g)
    if informative:
        a, sy = a / a.norm() * 1.0, 0.3
    x = mix.sample(1, g)
    y = x @ a.T + sy * torch.randn(1, 1, generator=g, dtype=torch.float64)
    return mix, a, sy, y, InverseProblem(MatrixOperator(a.float()), y.float(), sy)


def formula(config: MGDMConfig, taus: list[int]) -> tuple[int, int]:
    g_sum = sum(config.grad_steps(i) for i in range(config.n_steps - 3))
    den = sum(min(config.n_denoising_steps, t + 1) - 1 for t in taus)
    return 1 + config.n_reps * (g_sum + den), config.n_reps * g_sum


def test_step_rules_keep_reference_semantics():
    rules = (StepRule(20, from_end=10),)
    fired = [i for i in range(97) if schedule_value(rules, 3, i, 100) == 20]
    assert fired == list(range(90, 97))  # n_steps is N = 100, not N - 3
    assert [i for i in range(17) if schedule_value(rules, 3, i, 20) == 20] == list(range(10, 17))
    ldm = (StepRule(20, from_end=30), StepRule(20, every=10))
    assert schedule_value(ldm, 3, 10, 100) == 20 and schedule_value(ldm, 3, 11, 100) == 3
    assert schedule_value([{"value": 0.01, "i_max": 10}], 0.03, 10, 100) == 0.01


def test_audio_cost_matches_reference_numbers():
    # the reference's audio preset costs 2449 forward passes and 1020 VJPs per run (NFE = 1 + R sum_i [G(i) + ...]).
    mix, a, sy, y, problem = gmm_problem()
    config = SPEC.config("paper-audio", tau_rule="deterministic")
    res = SPEC.run(
        mix.denoiser(), problem, torch.randn(2, 8), generator=torch.Generator().manual_seed(0), config=config
    )
    assert (res.nfe, res.vjp) == (2449, 1020)


@pytest.mark.parametrize("per_chain", [False, True])
def test_cost_matches_formula_with_random_tau(per_chain):
    mix, a, sy, y, problem = gmm_problem()
    config = SPEC.config("fast", n_denoising_steps=20, tau_per_chain=per_chain, min_tau=3)
    res = SPEC.run(
        mix.denoiser(), problem, torch.randn(4, 8), generator=torch.Generator().manual_seed(1), config=config
    )
    # per-chain taus: the batch runs the longest chain, so the formula uses the largest tau.
    taus = [max(t) for t in res.info["tau"]]
    assert (res.nfe, res.vjp) == formula(config, taus)
    assert len(res.info["tau"][0]) == (4 if per_chain else 1)


def test_tau_rules():
    g = torch.Generator().manual_seed(2)
    c = MGDMConfig(threshold=5, min_tau=10)
    assert draw_tau(c, 200, 6, 3, g).tolist() == [200, 200, 200]  # deterministic phase of "mix"
    t = draw_tau(c, 200, 0, 3, g)
    assert 10 <= int(t[0]) < 200 and len(set(t.tolist())) == 1  # one shared draw
    many = draw_tau(MGDMConfig(tau_per_chain=True), 200, 0, 256, g)
    assert len(set(many.tolist())) > 50 and int(many.min()) >= 10 and int(many.max()) < 200
    assert draw_tau(MGDMConfig(tau_rule="mix-det", threshold=5), 200, 0, 1, g).item() == 150
    assert draw_tau(MGDMConfig(tau_rule="zero"), 9, 0, 1, g).item() == 1  # reference would fail here
    mix_det = MGDMConfig(tau_rule="mix-det", threshold=50)
    assert [draw_tau(mix_det, 200, i, 1, g).item() for i in (0, 49, 50)] == [150, 150, 200]
    with pytest.raises(UserInputError):
        MGDMConfig(tau_rule="nope")


def test_same_seed_same_samples():
    mix, a, sy, y, problem = gmm_problem()
    runs = [
        SPEC.run(
            mix.denoiser(),
            problem,
            torch.randn(6, 8, generator=torch.Generator().manual_seed(3)),
            generator=torch.Generator().manual_seed(4),
            config=SPEC.config("fast"),
        ).samples
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_mgdm_approaches_exact_posterior():
    mix, a, sy, y, problem = gmm_problem(seed=5)
    g = torch.Generator().manual_seed(6)
    post = mix.posterior(a, y[0], sy)
    ref = post.sample(500, g)
    prior_sw = sliced_wasserstein(mix.sample(500, g), ref, generator=torch.Generator().manual_seed(0))
    config = SPEC.config("gmm", n_steps=40, threshold=28, n_reps=2)
    res = SPEC.run(mix.denoiser(), problem, torch.randn(500, 8, generator=g), generator=g, config=config)
    sw = sliced_wasserstein(res.samples, ref, generator=torch.Generator().manual_seed(0))
    reference = SPEC.run(
        mix.denoiser(),
        problem,
        torch.randn(500, 8, generator=g),
        generator=g,
        config=SPEC.config("paper-image", n_steps=40, threshold=28),
    )
    sw_reference = sliced_wasserstein(reference.samples, ref, generator=torch.Generator().manual_seed(0))
    assert sw < 0.6 * prior_sw  # the observation is used
    assert sw < 0.75 * sw_reference  # the fixes (scale-aware rate, per-chain tau) help on data spanning +-16


def test_bad_inputs_give_clear_errors():
    mix, a, sy, y, problem = gmm_problem()
    with pytest.raises(UserInputError, match="shape"):
        SPEC.run(mix.denoiser(), problem, torch.randn(2, 6))
    with pytest.raises(UserInputError, match="NaN"):
        SPEC.run(mix.denoiser(), problem, torch.full((2, 8), float("nan")))
    with pytest.raises(UserInputError, match="preset"):
        SPEC.config("no-such-preset")
    with pytest.raises(UserInputError, match="setting"):
        SPEC.config(n_gibbs=3)
    with pytest.raises(UserInputError, match="unknown sampler"):
        get_sampler("mgdmm")


def _potential_step_by_autograd(prior, problem, x0, x_t, abar_tau, abar_t, n_grad, lr, config, generator):
    """The potential step written as the reference's VI loss and differentiated by autograd."""
    from mgdm_audio.core.bridge import bridge_mean_std
    from mgdm_audio.core.denoiser import vp_denoise

    m, s = bridge_mean_std(x0, x_t, 1.0, abar_tau, abar_t, 1.0)
    s = s.expand_as(m)
    standardised = config.lr_scale != "absolute"
    if config.lr_scale == "bridge_norm":
        lr = lr / m[0].numel() ** 0.5
    u = (torch.zeros_like(m) if standardised else m.clone()).requires_grad_(True)
    rho = torch.log(s).clone().requires_grad_(True)
    rho_lr = lr if config.log_std_lr is None else config.log_std_lr
    opt = torch.optim.Adam([{"params": [u]}, {"params": [rho], "lr": rho_lr}], lr=lr)

    def mean_of(u_):
        return m + s * u_ if standardised else u_

    for _ in range(n_grad):
        opt.zero_grad()
        v = mean_of(u) + rho.exp() * torch.randn(m.shape, generator=generator, dtype=m.dtype)
        kl = 0.5 * ((v - m) / s).pow(2).sum()
        loss = -problem.log_likelihood(vp_denoise(prior, v, abar_tau)).sum() + kl - rho.sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return mean_of(u) + rho.exp() * torch.randn(m.shape, generator=generator, dtype=m.dtype)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # reference: absolute rate, one-sample bridge term, shared rate
        {"lr_scale": "bridge_std", "log_std_lr": 0.03},
        {"lr_scale": "bridge_norm"},
        {"lr_scale": "bridge_std", "log_std_lr": 0.1},
    ],
)
def test_potential_step_closed_form_gradient_equals_autograd(overrides):
    # the sampler assembles the loss gradient around one denoiser VJP; autograd of the written-out loss must agree
    from mgdm_audio.core.denoiser import CountingDenoiser
    from mgdm_audio.samplers.mgdm import potential_step

    mix, a, sy, y, problem = gmm_problem(informative=True)
    prior = CountingDenoiser(mix.denoiser())
    config = MGDMConfig(**overrides)
    g = torch.Generator().manual_seed(3)
    x0, x_t = torch.randn(3, 8, generator=g) * 4, torch.randn(3, 8, generator=g)
    abar = prior.levels.abar
    tau, t = torch.tensor([40, 120, 300]), 500
    lr = 0.5 if config.lr_scale != "absolute" else 0.05
    args = (prior, problem, x0, x_t, abar[tau], abar[t], 4, lr, config)
    g = torch.Generator().manual_seed(7)
    got = potential_step(*args, g).draw(g)
    want = _potential_step_by_autograd(*args, torch.Generator().manual_seed(7))
    assert not torch.allclose(got, x0, atol=1e-2)  # the step moved
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert prior.vjp == 8  # one VJP per gradient step of each of the two runs


def test_potential_step_elbo_matches_closed_form_evidence():
    # One Gaussian prior component in 1-D: D_tau(x) = c x is linear, so
    # Z(x0, x_t) = ∫ N(y; a c x, sy^2) N(x; m, s^2) dx = N(y; a c m, sy^2 + a^2 c^2 s^2), and the Gaussian VI family
    # holds the exact conditional: once fitted, the mean ELBO estimate reaches log Z (and never exceeds it).
    from mgdm_audio.core.bridge import bridge_mean_std
    from mgdm_audio.core.denoiser import CountingDenoiser
    from mgdm_audio.samplers.mgdm import potential_step

    var, a, sy, y = 4.0, 1.5, 0.5, 2.0
    mix = GaussianMixture(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), var=var)
    prior = CountingDenoiser(mix.denoiser())
    problem = InverseProblem(MatrixOperator(torch.tensor([[a]], dtype=torch.float64)), torch.tensor([[y]]).double(), sy)
    n, abar = 4000, prior.levels.abar
    tau, t = torch.full((n,), 150), 400
    x0 = torch.full((n, 1), 0.3, dtype=torch.float64)
    x_t = torch.full((n, 1), -0.8, dtype=torch.float64)
    m, s = bridge_mean_std(x0, x_t, 1.0, abar[tau], abar[t], 1.0)
    sigma2 = (1 - abar[150]) / abar[150]
    c = var / (abar[150].sqrt() * (var + sigma2))
    total = sy**2 + (a * c * s[0, 0]) ** 2
    log_z = float(-0.5 * (y - a * c * m[0, 0]) ** 2 / total - 0.5 * torch.log(2 * torch.pi * total))
    log_z -= -0.5 * math.log(2 * math.pi * sy**2)  # log_likelihood drops the Gaussian's constant
    config = MGDMConfig(lr_scale="bridge_std")

    def estimate(n_grad: int) -> Tensor:
        g = torch.Generator().manual_seed(2)
        fit = potential_step(prior, problem, x0, x_t, abar[tau], abar[t], n_grad, 0.05, config, g)
        return fit.elbo(prior, problem, fit.draw(g), abar[tau])

    fitted, unfitted = estimate(300), estimate(0)
    standard_error = float(fitted.std()) / n**0.5
    assert abs(float(fitted.mean()) - log_z) < 4 * standard_error + 0.01
    assert float(unfitted.mean()) < log_z - 0.2  # the bridge alone is a loose bound here


def test_x0_candidates_cost_and_bad_value():
    mix, a, sy, y, problem = gmm_problem()
    config = SPEC.config("fast", n_denoising_steps=6, n_reps=2, x0_candidates=3, candidate_steps=5)
    res = SPEC.run(
        mix.denoiser(), problem, torch.randn(4, 8), generator=torch.Generator().manual_seed(1), config=config
    )
    # every call counts once per B chains it evaluates: the M stacked VI fits cost M units per gradient step, their
    # ELBOs M units, and the M - 1 fresh candidates (an ancestral chain from t) M - 1 units per chain step
    timesteps = mix.denoiser().levels.timesteps(config.n_steps).flip(0)
    k, m = config.n_denoising_steps, config.x0_candidates
    nfe, vjp = 1, 0
    for i, tau in enumerate(max(t) for t in res.info["tau"]):
        g = config.grad_steps(i)
        t = int(timesteps[i + 1])
        extra = (m - 1) * g + m + (m - 1) * (min(k, t + 1) - 1) if i < config.candidate_steps else 0
        nfe += config.n_reps * (g + min(k, tau + 1) - 1 + extra)
        vjp += config.n_reps * g * (m if i < config.candidate_steps else 1)
    assert (res.nfe, res.vjp) == (nfe, vjp)
    assert len(res.info["x0_switched"]) == config.n_reps * config.candidate_steps
    assert all(0.0 <= f <= 1.0 for f in res.info["x0_switched"])
    with pytest.raises(UserInputError, match="x0_candidates"):
        SPEC.config("fast", x0_candidates=0)
    with pytest.raises(UserInputError, match="setting"):
        SPEC.config("fast", candidate_weight="importance")  # a rejected ablation, removed


def test_x0_candidates_move_chains_to_the_posterior_mode():
    # Two prior modes +-4 (1, ..., 1) with weights 0.1 / 0.9; y = x_1 + noise = 4 puts the posterior on the light mode
    # (weight 1 - 1e-6). The reference's single-site sweeps leave about a quarter of the chains in the heavy mode,
    # pulled towards y within it; the i-SIR candidates move them while the diffused modes still overlap.
    d = 8
    means = torch.stack([torch.full((d,), 4.0), torch.full((d,), -4.0)]).double()
    mix = GaussianMixture(means, torch.tensor([0.1, 0.9]).double().log())
    a, y = torch.eye(1, d, dtype=torch.float64), torch.tensor([[4.0]], dtype=torch.float64)
    assert float(mix.posterior(a, y[0], 1.0).log_weights.exp()[0]) > 0.999
    problem = InverseProblem(MatrixOperator(a.float()), y.float(), 1.0)

    def on_light_mode(candidates: int) -> float:
        g = torch.Generator().manual_seed(0)
        config = SPEC.config("gmm", n_steps=25, threshold=17, n_reps=2, x0_candidates=candidates)
        res = SPEC.run(mix.denoiser(), problem, torch.randn(300, d, generator=g), generator=g, config=config)
        return float((res.samples.double().mean(1) > 0).double().mean())

    assert on_light_mode(1) < 0.85
    assert on_light_mode(4) > 0.93


def test_x0_candidates_keep_each_chain_with_its_own_observation():
    # One observation per chain (as in separation): y = +4 for the first half, -4 for the second, equal prior weights;
    # the candidates are stacked M times over the batch, so each copy must meet its own chain's y.
    d, n = 8, 200
    means = torch.stack([torch.full((d,), 4.0), torch.full((d,), -4.0)]).double()
    mix = GaussianMixture(means, torch.tensor([0.5, 0.5]).double().log())
    y = torch.cat([torch.full((n // 2, 1), 4.0), torch.full((n // 2, 1), -4.0)])
    problem = InverseProblem(MatrixOperator(torch.eye(1, d)), y, 1.0)
    g = torch.Generator().manual_seed(0)
    config = SPEC.config("gmm", n_steps=25, threshold=17, n_reps=2, x0_candidates=4)
    res = SPEC.run(mix.denoiser(), problem, torch.randn(n, d, generator=g), generator=g, config=config)
    positive = res.samples.double().mean(1) > 0
    assert float(positive[: n // 2].double().mean()) > 0.95
    assert float((~positive[n // 2 :]).double().mean()) > 0.95
