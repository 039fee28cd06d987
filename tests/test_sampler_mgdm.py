"""MGDM: cost formulas of MGDM_REFERENCE.md §2.9, tau rules, step rules, determinism, posterior sanity."""

import pytest
import torch

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
    # MGDM_REFERENCE.md §2.9: audio preset, 2449 forward passes and 1020 VJPs per run.
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
