r"""MGDM: mixture-guided diffusion with Gibbs sampling and data augmentation (Janati, Moufad et al. 2025).

Each intermediate posterior ``pi_t(x_t) ∝ g_t(x_t) p_t(x_t)`` is approximated through the mixture
``g_t(x_t) ≈ sum_s w_t^s ∫ g(y | D_s(x_s)) p_{s|t}(x_s | x_t) dx_s``; augmenting with ``x_0`` and
``x_s = x_tau`` gives three conditionals, visited by Gibbs sweeps at each reverse step
``t_hi -> t`` (VP coordinates, grid ``ts = floor(linspace(0, T-1, N))``, ``r = reversed(ts)``)::

    x = x_T;  x0 = D_{r[0]}(x)                                            # 1 NFE
    for i in 0 .. N-4:   (t_hi, t, t_lo) = (r[i], r[i+1], r[i+2]);  tau = tau_rule(t_lo, i)
        x = q_eta(x_t | x0, x_hi)                                         # bridge, no NFE
        repeat R times (Gibbs sweeps):
            x_tau ~ VI fit of  g(y | D_tau(x_tau)) q(x_tau | x0, x_t)      # G(i) Adam steps: G NFE + G VJP
            x0    = DDIM_eta chain tau -> 0 in min(K, tau + 1) points     # min(K, tau+1) - 1 NFE
            x     = q_1(x_t | x_tau, x_hi)                                # exact noising bridge (eta = 1)
    return x0

The potential (VI) step fits ``N(mu, diag(exp(2 rho)))`` to ``g(y|D_tau(.)) q(x_tau | x0, x_t)`` by
minimising, with a fresh Adam(lr) for ``G(i)`` iterations and one reparameterised sample each,

.. math:: L = -\log g(y \mid D_\tau(v)) + \tfrac12 \lVert (v - m)/s \rVert^2 - \textstyle\sum \rho,
          \qquad v = \mu + e^{\rho} \odot z,

from ``mu = m``, ``rho = log s`` (``m, s`` the mean and std of the exact bridge). Then it draws once.

Cost: ``NFE = 1 + R sum_i [G(i) + min(K, tau_i + 1) - 1]`` and ``VJP = R sum_i G(i)``; the drawn ``tau_i`` are
returned in ``info["tau"]``. A warm start (:class:`~mgdm_audio.samplers.base.WarmStart`) skips the first ``c`` grid
points (those above its ``S``), starts at ``x = sqrt(abar) x_hat + sqrt(1 - abar) n`` at ``r[c]`` and runs the steps
``i >= c`` (the step rules keep their positions in the full grid). With ``x0_candidates = M > 1`` the steps
``i < candidate_steps`` add ``(M - 1) G(i) + M + (M - 1)(min(K, t_i + 1) - 1)`` NFE and ``(M - 1) G(i)`` VJP per
sweep (:func:`candidate_potential_step`).

The reference code's quirks and the flags that keep or fix them are listed in :class:`MGDMConfig`; how the
presets were chosen is in the GMM tuning log (``evaluation/gmm/rounds/README.md``) and the separation and image
validation tables (``evaluation/separation``, ``evaluation/image``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mgdm_audio.core.bridge import bridge_mean_std, ddim_step, sample_bridge
from mgdm_audio.core.denoiser import CountingDenoiser, vp_denoise
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.optim import GroupAdam
from mgdm_audio.core.rng import randn_like
from mgdm_audio.samplers.base import (
    Callback,
    SamplerSpec,
    StepRule,
    notify,
    sampler,
    schedule_value,
    vp_schedule,
    vp_start,
)

TauRule = Literal["mix", "uniform", "deterministic", "mix-det", "zero"]


@dataclass
class MGDMConfig:
    """MGDM hyperparameters; defaults are the reference's image settings (``mgdm.yaml``).

    The reference code's quirks, and the flags that keep (the default) or fix them:

    * ``tau_per_chain=False``: one ``tau`` for the whole batch, which correlates the chains; ``True`` draws one
      ``tau`` per chain.
    * ``lr_scale="absolute"``: Adam's rate is absolute, sized for data in ``[-1, 1]``. ``"bridge_std"`` runs Adam
      on the standardised offset ``u = (mu - m) / s`` (a per-chain rate ``lr * s`` on ``mu``), invariant to the
      data's scale; ``"bridge_norm"`` also divides the rate by ``sqrt(n)`` (``n`` coordinates per chain), so that
      Adam's first step, about ``lr sqrt(n)`` in norm, is about ``lr`` bridge stds long.
    * ``log_std_lr=None``: ``mu`` and ``rho`` share one rate; a number gives ``rho`` its own absolute rate.
    * ``tau_rule="zero"`` draws ``randint(1, max(1, t_lo // 5))``, which fails in the reference when
      ``t_lo // 5 <= 1``; here the upper end is at least 2 (``tau = 1``). Not a flag.
    * The noising bridge ``q_1(x_t | x_tau, x_hi)`` uses ``eta = 1`` whatever ``eta`` is; the late steps are a
      single component (``tau = t_lo``); the output is the last denoised ``x0``. Reference behaviour, not flags.
    * ``x0_candidates=1``: single-site moves ``x_tau | x0, x_t`` then ``x0 | x_tau``, which cannot take a chain to
      another prior mode once ``tau`` is below the noise level where the diffused modes overlap. ``M > 1`` draws
      ``(x0, x_tau) | x_t`` as a block by i-SIR (:func:`candidate_potential_step`) in the outer steps
      ``i < candidate_steps``. Not a reference setting.
    * The one-step ``alphas_cumprod`` offset of pixel priors lives in the adapter
      (:class:`~mgdm_audio.core.denoiser.VPEpsDenoiser`, ``reference_index_offset``).
    """

    n_steps: int = 100  # N, the grid length
    n_reps: int = 1  # R, Gibbs sweeps per reverse step
    n_denoising_steps: int = 20  # K, points of the DDIM denoising chain
    eta: float = 1.0
    tau_rule: TauRule = "mix"
    threshold: int = 70
    min_tau: int = 10
    grad_steps_rules: tuple[StepRule, ...] = (StepRule(20, from_end=10),)
    grad_steps_default: int = 3
    lr_rules: tuple[StepRule, ...] = (StepRule(0.01, i_max=10),)
    lr_default: float = 0.03
    tau_per_chain: bool = False
    lr_scale: Literal["absolute", "bridge_std", "bridge_norm"] = "absolute"
    log_std_lr: float | None = None
    x0_candidates: int = 1  # M: 1 = reference; M > 1 = i-SIR over the current x0 and M - 1 fresh draws
    candidate_steps: int = 10**9  # the candidates are used in the outer steps i < this

    def __post_init__(self) -> None:
        if self.n_reps < 1 or self.n_denoising_steps < 1:
            raise UserInputError("MGDM needs n_reps >= 1 and n_denoising_steps >= 1.")
        if self.x0_candidates < 1:
            raise UserInputError(f"MGDM needs x0_candidates >= 1, got {self.x0_candidates}.")
        if self.tau_rule not in ("mix", "uniform", "deterministic", "mix-det", "zero"):
            raise UserInputError(f"unknown MGDM tau rule '{self.tau_rule}'.")
        if self.lr_scale not in ("absolute", "bridge_std", "bridge_norm"):
            raise UserInputError(
                f"unknown MGDM lr_scale '{self.lr_scale}'; use 'absolute', 'bridge_std' or 'bridge_norm'."
            )
        self.grad_steps_rules = tuple(r if isinstance(r, StepRule) else StepRule(**r) for r in self.grad_steps_rules)
        self.lr_rules = tuple(r if isinstance(r, StepRule) else StepRule(**r) for r in self.lr_rules)

    def grad_steps(self, i: int) -> int:
        return int(schedule_value(self.grad_steps_rules, self.grad_steps_default, i, self.n_steps))

    def lr(self, i: int) -> float:
        return float(schedule_value(self.lr_rules, self.lr_default, i, self.n_steps))


def host_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """The generator for ``tau`` draws, which set Python-level loop lengths and so must be on the host: the generator
    itself on CPU; on a GPU a CPU generator seeded once from it (one host sync per run, not one per step)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


def draw_tau(config: MGDMConfig, t_lo: int, i: int, batch: int, generator: torch.Generator | None) -> Tensor:
    """The mixture index ``tau`` (int64, shape ``(batch,)``; one shared draw unless ``tau_per_chain``)."""
    n = batch if config.tau_per_chain else 1

    def randint(lo: int, hi: int) -> Tensor:  # uniform on {lo, ..., hi - 1}; t_lo itself when empty
        if hi <= lo:
            return torch.full((n,), t_lo, dtype=torch.long)
        return torch.randint(lo, hi, (n,), generator=generator, device=generator.device if generator else "cpu").cpu()

    rule, random_phase = config.tau_rule, i < config.threshold
    if rule == "deterministic" or (rule in ("mix", "mix-det") and not random_phase):
        tau = torch.full((n,), t_lo, dtype=torch.long)
    elif rule == "mix-det":
        tau = torch.full((n,), int(0.75 * t_lo), dtype=torch.long)
    elif rule == "zero":
        tau = randint(1, max(2, t_lo // 5))
    else:  # "uniform", or "mix" in its random phase
        tau = randint(config.min_tau, t_lo)
    return tau.expand(batch)


@dataclass
class PotentialFit:
    """The potential step's Gaussian fit ``N(mu, e^{2 rho})`` of ``x_tau`` and its bridge ``N(m, s^2)``."""

    mu: Tensor
    rho: Tensor
    m: Tensor
    s: Tensor

    def draw(self, generator: torch.Generator | None) -> Tensor:
        """One draw ``x_tau = mu + e^rho z``."""
        with torch.no_grad():
            return randn_like(self.m, generator) * self.rho.exp() + self.mu

    def elbo(self, prior: CountingDenoiser, problem: InverseProblem, x_tau: Tensor, abar_tau: Tensor) -> Tensor:
        r"""Per chain, the evidence lower bound of ``log Z(x0, x_t) = log ∫ g(y | D_tau(x)) q(x | x0, x_t) dx`` with
        its first term at the draw ``x_tau`` (1 NFE; float64, as ``log g`` is large when ``sigma_y`` is small):

        .. math:: \log g(y \mid D_\tau(x_\tau)) - \mathrm{KL}(N(\mu, e^{2\rho}) \,\|\, N(m, s^2)).
        """
        with torch.no_grad():
            log_g = problem.log_likelihood(vp_denoise(prior, x_tau, abar_tau), dtype=torch.float64)
            inv_var = self.s.reciprocal().square()
            var_ratio = (2 * self.rho).exp() * inv_var
            kl = 0.5 * (var_ratio + (self.mu - self.m).square() * inv_var - 1.0 - var_ratio.log())
            return log_g - kl.reshape(kl.shape[0], -1).double().sum(1)


def potential_step(
    prior: CountingDenoiser,
    problem: InverseProblem,
    x0: Tensor,
    x_t: Tensor,
    abar_tau: Tensor,
    abar_t: Tensor,
    n_grad: int,
    lr: float,
    config: MGDMConfig,
    generator: torch.Generator | None,
) -> PotentialFit:
    r"""The potential step: the Gaussian VI fit of ``g(y|D_tau(x_tau)) q(x_tau | x0, x_t)``, ``n_grad`` Adam steps at
    rate ``lr`` from the bridge (``config`` gives the rate's scale and the log-std rate); ``.draw`` gives ``x_tau``.

    The gradient of the one-sample loss ``L(v) = -log g(y | D_tau(v)) + ||(v - m)/s||^2 / 2 - sum(rho)`` at
    ``v = mu + e^rho z`` is assembled in closed form around one VJP of the denoiser:

    .. math:: \nabla_v L = -J_{D_\tau}(v)^\top \nabla_{x_0} \log g(y \mid D_\tau(v)) + (v - m)/s^2,
              \quad \nabla_\mu L = \nabla_v L, \quad \nabla_\rho L = e^\rho z \odot \nabla_v L - 1,

    the same numbers autograd gives for the loss, without recording the elementwise graph around the network.
    """
    lr_scale = config.lr_scale
    m, s = bridge_mean_std(x0, x_t, 1.0, abar_tau, abar_t, 1.0)  # s: per chain, (B, 1, ...), broadcast below
    standardised = lr_scale != "absolute"  # Adam on the standardised offset u = (mu - m) / s
    if standardised and lr_scale == "bridge_norm":
        lr = lr / m[0].numel() ** 0.5
    u = torch.zeros_like(m) if standardised else m.clone()
    rho = torch.log(s).expand_as(m).clone()
    rho_lr = lr if config.log_std_lr is None else config.log_std_lr
    # the fused kernel on CPU/CUDA (the numbers of torch.optim.Adam(fused=True)), without torch.optim's import cost
    opt = GroupAdam([(u, lr), (rho, rho_lr)])
    inv_var = s.reciprocal().square()
    for _ in range(n_grad):
        with torch.no_grad():  # v = m + d, d = (mu - m) + e^rho z: each full-size tensor made once, updated in place
            offset = s * u if standardised else u - m  # mu - m
            noise = randn_like(m, generator).mul_(rho.exp())
            d = offset.add_(noise)
            v = (m + d).requires_grad_(True)
        with torch.enable_grad():
            x0_hat = vp_denoise(prior, v, abar_tau)
            grad_v = problem.pullback_grad_log_likelihood(x0_hat, v, scale=-1.0)
        with torch.no_grad():
            grad_mu = grad_v.addcmul_(d, inv_var)
            grad_rho = noise.mul_(grad_v).sub_(1.0)
            opt.step([grad_mu.mul_(s) if standardised else grad_mu, grad_rho])
    with torch.no_grad():
        return PotentialFit(m + s * u if standardised else u, rho, m, s)


def candidate_potential_step(
    prior: CountingDenoiser,
    problem: InverseProblem,
    x0: Tensor,
    x_t: Tensor,
    tau: Tensor,
    t: int,
    n_grad: int,
    lr: float,
    config: MGDMConfig,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    r"""Draw ``(x0, x_tau) | x_t`` jointly by iterated sampling-importance-resampling (i-SIR), then ``x_tau``.

    Under MGDM's augmented target ``g(y|D_tau(x_tau)) q(x_tau | x0, x_t) p_{0|t}(x0 | x_t)`` the marginal of ``x0``
    given ``x_t`` is ``p_{0|t}(x0 | x_t) Z(x0, x_t)`` with ``Z(x0, x_t) = ∫ g(y|D_tau(x)) q(x | x0, x_t) dx``. The
    candidates are the chain's current ``x0`` and ``M - 1`` fresh draws from ``p_{0|t}(. | x_t)`` (an ancestral
    DDIM chain from ``t``, ``K`` points); each gets the potential step's VI fit, and one is kept with probability
    proportional to ``exp(ELBO)``, the fit's estimate of ``log Z`` (:meth:`PotentialFit.elbo`). With exact draws from
    ``p_{0|t}`` and exact ``Z`` this would be the i-SIR Markov kernel for ``x0 | x_t`` (the current state among the
    candidates); here the proposal is a K-point chain, ``Z`` is a one-sample estimate (the current state's is drawn
    afresh each time), and the kept ``x_tau`` is the draw that scored, so the likelihood tilts it twice. Unlike the
    reference's single-site updates, it can move a chain to another mode of ``p_{0|t}`` while the diffused modes
    overlap.

    Returns the kept ``x_tau`` and, per chain, the index of the kept candidate (0: the current ``x0``).
    Cost, in units of one call on ``B`` chains: ``M G`` NFE and VJP for the ``M`` potential steps (one stacked batch of
    ``M B``), ``M`` NFE for the evidence estimates and ``(M - 1)(min(K, t + 1) - 1)`` NFE for the fresh candidates.
    """
    batch, copies, abar = x0.shape[0], config.x0_candidates, prior.levels.abar
    tile = (copies - 1, *([1] * (x_t.ndim - 1)))
    with torch.no_grad():
        start = torch.full(((copies - 1) * batch,), t, dtype=torch.long)
        fresh = denoising_chain(prior, x_t.repeat(tile), start, config.n_denoising_steps, abar, 1.0, generator)
    if problem.y.shape[0] == batch and batch > 1:  # one observation per chain: repeat it for the candidates
        y = problem.y.repeat(copies, *([1] * (problem.y.ndim - 1)))
        problem = InverseProblem(problem.operator, y, problem.sigma_y)
    abar_tau = abar[tau.repeat(copies)]
    x0s, x_ts = torch.cat([x0, fresh]), torch.cat([x_t, x_t.repeat(tile)])
    fit = potential_step(prior, problem, x0s, x_ts, abar_tau, abar[t], n_grad, lr, config, generator)
    x_tau = fit.draw(generator)
    log_z = fit.elbo(prior, problem, x_tau, abar_tau)
    with torch.no_grad():
        log_w = log_z.reshape(copies, batch).nan_to_num(nan=-math.inf, posinf=-math.inf)
        # a chain whose every estimate failed (NaN, or -inf for all) keeps its current x0
        log_w[0] = torch.where(torch.isfinite(log_w).any(0), log_w[0], torch.zeros_like(log_w[0]))
        cumulative = torch.softmax(log_w, 0).cumsum(0)
        device = generator.device if generator is not None else "cpu"
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64).to(cumulative.device)
        kept = (cumulative < u[None]).sum(0).clamp(max=copies - 1)
        x_tau = x_tau.reshape(copies, batch, *x_tau.shape[1:])[kept, torch.arange(batch, device=kept.device)]
    return x_tau, kept


def denoising_chain(
    prior: CountingDenoiser,
    x_tau: Tensor,
    tau: Tensor,
    n_points: int,
    abar: Tensor,
    eta: float,
    generator: torch.Generator | None,
) -> Tensor:
    """DDIM(eta) from ``tau`` to 0 on ``floor(linspace(0, tau, n))``, ``n = min(K, tau + 1)`` per chain.

    Chains whose grid is shorter stop early (their later updates are masked); the batch costs
    ``max_b n_b - 1`` NFE.
    """
    n_b = torch.minimum(torch.full_like(tau, n_points), tau + 1)
    n_max = int(n_b.max())
    if n_max < 2:
        return vp_denoise(prior, x_tau, abar[tau])
    j = torch.arange(n_max, dtype=torch.float64)
    # grid_b[j] = floor(tau_b * (n_b - 1 - j) / (n_b - 1)): tau_b = g_0 > ... > g_{n_b - 1} = 0
    steps = (n_b - 1).clamp(min=1).double()[:, None]
    grid = torch.floor(tau.double()[:, None] * ((steps - j[None]) / steps).clamp(min=0)).long()
    x = x_tau
    for jj in range(n_max - 1):
        k, k_next = grid[:, jj], grid[:, jj + 1]
        active = (jj < n_b - 1) & (k > 0)
        k_safe = torch.where(active, k, torch.ones_like(k))
        x0 = vp_denoise(prior, x, abar[k_safe])
        x_new = ddim_step(x, x0, abar[k_safe], abar[torch.where(active, k_next, k_safe)], eta, generator)
        if bool(active.all()):  # the common case (every chain still stepping): no masked copy
            x = x_new
        else:
            x = torch.where(active.to(x.device).reshape(-1, *([1] * (x.ndim - 1))), x_new, x)
    return x


@sampler(MGDMConfig)
def mgdm(
    prior: CountingDenoiser,
    problem: InverseProblem | None,
    x_init: Tensor,
    generator: torch.Generator | None,
    config: MGDMConfig,
    callback: Callback | None,
    info: dict[str, Any],
) -> Tensor:
    assert problem is not None
    abar = prior.levels.abar
    ts, cut = vp_schedule(prior, config.n_steps)  # cut > 0: a warm start runs the steps i >= cut only
    r = ts.flip(0)
    batch = x_init.shape[0]
    taus: list[list[int]] = []
    switched: list[Tensor] = []
    with torch.no_grad():
        x = vp_start(prior, x_init, abar[r[cut]])
        x0 = vp_denoise(prior, x, abar[r[cut]])
    total = config.n_steps - 3
    tau_generator = host_generator(generator)
    for i in range(cut, total):
        t_hi, t, t_lo = int(r[i]), int(r[i + 1]), int(r[i + 2])
        tau = draw_tau(config, t_lo, i, batch, tau_generator)
        taus.append(tau.tolist() if config.tau_per_chain else [int(tau[0])])
        n_grad, lr = config.grad_steps(i), config.lr(i)
        x_hi = x
        with torch.no_grad():
            x = sample_bridge(x0, x_hi, 1.0, abar[t], abar[t_hi], config.eta, generator)
        for _ in range(config.n_reps):
            if config.x0_candidates > 1 and i < config.candidate_steps:
                x_tau, kept = candidate_potential_step(prior, problem, x0, x, tau, t, n_grad, lr, config, generator)
                switched.append((kept > 0).double().mean())  # a tensor: no host sync inside the loop
            else:
                fit = potential_step(prior, problem, x0, x, abar[tau], abar[t], n_grad, lr, config, generator)
                x_tau = fit.draw(generator)
            with torch.no_grad():
                x0 = denoising_chain(prior, x_tau, tau, config.n_denoising_steps, abar, config.eta, generator)
                x = sample_bridge(x_tau, x_hi, abar[tau], abar[t], abar[t_hi], 1.0, generator)
        notify(callback, i=i + 1 - cut, total=total - cut, x=x, x0=x0, t=t)
    info["tau"] = taus
    if switched:
        # per sweep with candidates: the fraction of chains that took a fresh x0
        info["x0_switched"] = torch.stack(switched).tolist()
    return x0


def _rules(*rules: StepRule) -> tuple[StepRule, ...]:
    return rules


#: A cheap setting with the fixes on: 20-point grid, one sweep, a 5-point denoising chain.
_FAST: dict[str, Any] = {
    "n_steps": 20,
    "n_reps": 1,
    "n_denoising_steps": 5,
    "threshold": 13,
    "grad_steps_rules": _rules(StepRule(5, from_end=5)),
    "grad_steps_default": 3,
    "lr_rules": (),
    "lr_default": 1.0,
    "lr_scale": "bridge_std",
    "log_std_lr": 0.03,
    "tau_per_chain": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    # mgdm.yaml base (what test_images.py actually runs).
    "paper-image": {},
    # context overrides of mgdm.yaml (presumably the paper's settings).
    "paper-image-ffhq": {"grad_steps_rules": _rules(StepRule(20, from_end=30)), "grad_steps_default": 5},
    "paper-image-imagenet": {
        "grad_steps_rules": _rules(StepRule(20, from_end=30)),
        "grad_steps_default": 5,
        "lr_rules": (),
        "lr_default": 0.03,
    },
    "paper-image-ldm": {"grad_steps_rules": _rules(StepRule(20, from_end=30), StepRule(20, every=10))},
    # configs/exp_sound/sampler/mgdm.yaml
    "paper-audio": {
        "n_steps": 20,
        "n_reps": 6,
        "n_denoising_steps": 15,
        "threshold": 13,
        "lr_rules": (),
        "lr_default": 0.005,
    },
    # Chosen on validation problems of the exact-posterior benchmark, rounds 1-14 of evaluation/gmm/rounds/README.md:
    # the fixes on (per-chain tau, bridge-std mean rate, absolute log-std rate), R = 4 sweeps with a K = 10 chain, the
    # reference's `mix-det` tau rule, a gentler mean rate in the first 31 steps, and the i-SIR candidates (M = 2) in
    # the first 45 steps.
    "gmm": {
        "tau_rule": "mix-det",
        "n_denoising_steps": 10,
        "n_reps": 4,
        "lr_rules": _rules(StepRule(0.5, i_max=30)),
        "lr_default": 1.0,
        "lr_scale": "bridge_std",
        "log_std_lr": 0.03,
        "tau_per_chain": True,
        "x0_candidates": 2,
        "candidate_steps": 45,
    },
    # MGDM at the competitors' GMM budget: the best of four points (the reference's image schedule and three
    # bridge-std rates) on the validation problems of round 17 (evaluation/gmm/rounds/README.md), as each competitor's
    # `gmm` preset is its best of four points (round 16). Shows what `gmm`'s fifteen rounds of tuning bought.
    "gmm-budget4": {
        "lr_rules": (),
        "lr_default": 0.5,
        "lr_scale": "bridge_std",
        "log_std_lr": 0.03,
        "tau_per_chain": True,
    },
    # A cheap setting with the same fixes (see _FAST).
    "fast": _FAST,
    # Images: `fast` with R = 2 Gibbs sweeps, chosen on Fashion-MNIST validation images
    # (evaluation/image/validation.md).
    "image": {**_FAST, "n_reps": 2},
    # Separation (the separator's `default`): `fast` with the mean rate 0.2 x the bridge std, chosen on the Gaussian
    # stem prior's exact posterior (evaluation/separation/gaussian_testbed.md) and the validation split
    # (evaluation/separation/validation_rate.md).
    "audio": {**_FAST, "lr_default": 0.2},
    # Separation (the separator's `fast`): `audio` on a 12-point grid, for the real-time target, chosen on the
    # validation split (evaluation/separation/validation_rtf.md).
    "audio-fast": {**_FAST, "n_steps": 12, "lr_default": 0.2},
    # `audio-fast` at the point chosen on a held-out-timbre validation split with the same 6-point budget as every
    # audio sampler (evaluation/separation/tuning.yaml; evaluation/results/separation_tuning.md); 0.05 is the
    # smallest rate of that grid.
    "audio-tuned": {**_FAST, "n_steps": 12, "lr_default": 0.05},
}

SPEC = SamplerSpec(
    name="mgdm",
    run=mgdm,
    config_cls=MGDMConfig,
    presets=PRESETS,
    warm_start=True,
    summary="mixture-guided diffusion: Gibbs sweeps over a mixture of DPS-type likelihood approximations",
)
