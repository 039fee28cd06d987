"""MSDM's separation sampler: cost, determinism, the Dirac constraint and a closed-form posterior."""

import math

import pytest
import torch

from mgdm_audio.audio.separation import SumOfStems
from mgdm_audio.core.denoiser import VEDenoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture, gmm_noise_levels
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator
from mgdm_audio.samplers.msdm import SPEC, msdm_sigmas
from mgdm_audio.samplers.registry import get_sampler

S, T = 4, 3
STEM_MEANS = torch.tensor([2.0, -1.0, 0.5, 0.0], dtype=torch.float64)


def _independent_gaussian_prior(var: float = 1.0):
    """Independent N(m_s, var) per stem and sample: one Gaussian component in dimension S*T."""
    means = STEM_MEANS[:, None].expand(S, T).reshape(1, -1).clone()
    mix = GaussianMixture(means, torch.zeros(1, dtype=torch.float64), var)
    return VEDenoiser(mix.denoise, gmm_noise_levels())


def _problem(y_value: float = 1.5):
    y = torch.full((1, 1, T), y_value)
    return InverseProblem(SumOfStems(S, T), y, 1e-3)


def _run(config, n=2000, seed=0, problem=None):
    g = torch.Generator().manual_seed(seed)
    x_init = torch.randn(n, S, T, generator=g)
    return SPEC.run(_independent_gaussian_prior(), problem or _problem(), x_init, generator=g, config=config)


def test_schedule_and_cost():
    cfg = SPEC.config("paper-audio")
    sig = msdm_sigmas(cfg)
    assert len(sig) == 151 and float(sig[0]) == pytest.approx(1.0) and float(sig[-2]) == pytest.approx(1e-4)
    assert float(sig[-1]) == 0.0
    out = _run(SPEC.config("paper-audio", n_steps=7, n_resamples=3), n=4)
    assert out.nfe == 7 * 3 and out.vjp == 0


def test_determinism_by_seed():
    cfg = SPEC.config("fast")
    a, b, c = _run(cfg, n=8, seed=1), _run(cfg, n=8, seed=1), _run(cfg, n=8, seed=2)
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)


def test_dirac_constraint():
    """With the final projection the stems sum to the mixture exactly; the reference (no projection) nearly."""
    problem = _problem()
    exact = _run(SPEC.config("paper-audio", n_steps=30, project_final=True), n=16, problem=problem).samples
    assert torch.allclose(exact.sum(1, keepdim=True), problem.y.expand(16, 1, T), atol=1e-5)
    ref = _run(SPEC.config("paper-audio", n_steps=30), n=16, problem=problem).samples
    gap = (ref.sum(1, keepdim=True) - problem.y).abs().max()
    assert 0 < float(gap) < 0.05


@pytest.mark.parametrize("likelihood", ["dirac", "gaussian"])
def test_posterior_mean_of_independent_gaussians(likelihood):
    """x_s ~ N(m_s, 1) independent, y = sum_s x_s: E[x_s | y] = m_s + (y - sum m) / S, Var = 1 - 1/S = 0.75.

    MSDM's two likelihoods are heuristics, not exact posterior samplers: the means come out right, the spread
    does not (measured with R = 2, churn 20: variances 0.47-0.61 instead of 0.75; with R = 1 and no churn the
    Dirac's constrained source collapses to a point). The test pins the mean and a loose variance band."""
    cfg = SPEC.config("paper-audio", likelihood=likelihood, sigma_max=40.0, n_steps=60)
    y = 3.5
    x = _run(cfg, n=3000, problem=_problem(y)).samples.double()
    expected_mean = STEM_MEANS + (y - float(STEM_MEANS.sum())) / S
    mean = x.mean((0, 2))
    var = x.var(0).mean(1)
    # Monte Carlo std of the mean: sqrt(0.75 / 3000) ~ 0.016 per stem and sample.
    assert torch.allclose(mean, expected_mean, atol=0.05), (mean, expected_mean)
    assert bool(((var > 0.35) & (var < 0.8)).all()), var
    assert float((x.sum(1) - y).abs().mean()) < 0.05


def test_gaussian_weight_quirk_changes_result():
    half = _run(SPEC.config("paper-audio-gaussian", n_steps=10), n=4).samples
    full = _run(SPEC.config("paper-audio-gaussian", n_steps=10, gaussian_half=False), n=4).samples
    assert not torch.allclose(half, full)


def test_requires_a_mixture_operator():
    spec = get_sampler("msdm")
    other = InverseProblem(MatrixOperator(torch.ones(2, 12)), torch.zeros(1, 2), 0.1)
    with pytest.raises(UserInputError, match="separates mixtures only"):
        spec.check(other, spec.config())
    spec.check(_problem(), spec.config())
    with pytest.raises(UserInputError, match="source_id"):
        _run(SPEC.config(source_id=4), n=2)
    assert math.isclose(min(20.0 / 150, math.sqrt(2) - 1), 0.13333, rel_tol=1e-4)
