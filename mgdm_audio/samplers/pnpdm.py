r"""PnP-DM (Wu, Sun, Chen, Zhang, Yue, Bouman 2024, "Principled probabilistic imaging using diffusion models as
plug-and-play priors"), the split-Gibbs sampler the MGDM reference runs as ``pnp_dm`` (``src/posterior_samplers/
pnp_dm/algo.py`` of Badr-MOUFAD/mgdm, after the authors' PnP-DM-public).

Split Gibbs on the augmented target ``pi(x, z) ∝ p(x) N(z; x, rho^2 I) g(y | z)`` with an annealed coupling

.. math:: \rho_k = \max(\rho_0 d^k, \rho_{min}), \qquad k = 0 .. K-1,

starting at ``x = x_init`` (its scale does not matter: the first coupling ``rho_0`` is large); each iteration

1. **Likelihood step.** ``z ~ pi(z | x, y) ∝ exp(-||y - A z||^2 / (2 sigma_y^2) - ||z - x||^2 / (2 rho_k^2))``.
   When the operator has SVD pieces (``likelihood="auto"``) this Gaussian is drawn exactly,
   ``z ~ N(Q^{-1}(A^T y / sigma_y^2 + x / rho^2), Q^{-1})`` with ``Q = A^T A / sigma_y^2 + I / rho^2``, by
   perturb-and-optimise: ``z = argmin ||y + sigma_y e_y - A z||^2 + (sigma_y^2 / rho^2) ||z - (x + rho e_x)||^2``
   with fresh ``e_x, e_y ~ N(0, I)``, which is DiffPIR's proximal data step
   (:func:`~mgdm_audio.samplers.diffpir.proximal_data_step`) on perturbed inputs. Otherwise (or with
   ``likelihood="langevin"``) ``langevin_steps`` unadjusted Langevin steps of size ``langevin_lr`` started at ``x``
   on the same potential (DAPS's Langevin loop, :func:`~mgdm_audio.samplers.daps._langevin`, with ``tau = sigma_y``
   and ``sigma = rho_k``; autograd through ``A`` for non-linear operators).
2. **Prior step.** ``x ~ pi(x | z) ∝ p(x) N(z; x, rho_k^2 I)``: the reverse diffusion of the prior started from
   ``z`` read as a noisy state at level ``rho_k`` (the paper's EDM-based prior step, VE: ``sigma(t) = sqrt(t)``).
   The levels are ``rho_k`` (clipped to the prior's range) followed by the points of a fixed geometric grid of
   ``prior_steps`` levels from ``prior_sigma_max`` to ``prior_sigma_min`` (EDM's "ve" discretisation, clipped to
   the prior's range) that lie below it, then 0. Per level ``s -> s'``, with ``D = D(x, s)`` (1 NFE), an
   Euler-Maruyama step of the reverse SDE in ``t = s^2`` (the reference's "ve" SDE solver):
   ``x <- D + (s'^2 / s^2)(x - D) + sqrt(s^2 - s'^2) n``; the last step (to 0) returns ``D``.

The sample is the last ``x``. Cost: per iteration one NFE per level of the prior step, no VJP (the Langevin
fallback differentiates ``A`` only); about 3850 NFE for the reference's image setting (99 iterations).

Warm start (:class:`~mgdm_audio.samplers.base.WarmStart`: an estimate ``\hat x`` and a level ``S``; SDEdit): the
chain starts at ``x = \hat x`` and runs the iterations ``k = c .. K-1`` only, ``c`` the number of couplings
``rho_k`` above ``S`` (:func:`~mgdm_audio.samplers.base.warm_cut`; at least the last iteration runs). ``x`` is the
clean variable of the split: its first likelihood step draws ``z`` around ``\hat x`` at coupling ``rho_c`` (in the
null space of ``A``, ``z = \hat x + rho_c e``), which is SDEdit's noising itself, so the estimate enters un-noised.
``info["rho"]`` lists the couplings run. Cost: the prior steps of ``rho_c .. rho_{K-1}`` only.

Quirk flags and deviations from the reference code:

* ``grid_start`` (default False): the prior step starts at ``rho_k`` itself. True reproduces the reference, which
  starts at the first grid level strictly below ``rho_k`` (reading ``z`` as less noisy than it is) and makes the
  prior step the identity once ``rho_k`` is below the grid (the audio setting, ``rho_min = 1e-3`` under a grid that
  ends at 0.02: 40 of its 99 iterations).
* The reference's Langevin step pulls ``z`` *away* from ``x`` (a flipped sign) with ``rho_0`` instead of
  ``rho_k``; here it is the Langevin chain of the likelihood step's actual target. Not a flag.
* The reference's audio config forces Langevin (``langevin_lr = 1e-9``, 100 steps); with ``sigma_y = 1e-4`` and the
  mixture's singular value 2 that is 100 steps of ``z <- z + 0.1 A^T (y - A z)`` plus noise of std ``4.5e-5``, i.e.
  nearly the projection onto ``A z = y``, which the exact step draws in one go (``likelihood="auto"``).
* The reference starts from its initial noise as is; so does this module (``start_scale`` is not read).

:data:`PNPDM_TASK_PARAMS` holds the reference image config's per-task overrides for the image module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mgdm_audio.core.denoiser import CountingDenoiser, Denoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import LinearOperator
from mgdm_audio.core.rng import randn_like
from mgdm_audio.samplers.base import Callback, SamplerSpec, WarmStart, notify, sampler, warm_cut
from mgdm_audio.samplers.daps import _langevin
from mgdm_audio.samplers.diffpir import proximal_data_step

#: The reference image config's per-task overrides (``configs/experiments/sampler/pnp_dm.yaml``, after Tables 3-4
#: of the paper): the masking tasks force the Langevin likelihood step, phase retrieval anneals more slowly.
PNPDM_TASK_PARAMS: dict[str, dict[str, Any]] = {
    "inpainting_center": {"likelihood": "langevin"},
    "inpainting_middle": {"likelihood": "langevin"},
    "outpainting_half": {"likelihood": "langevin"},
    "outpainting_bottom": {"likelihood": "langevin"},
    "outpainting_top": {"likelihood": "langevin"},
    "phase_retrieval": {"rho_decay": 0.95, "rho_min": 0.1},
}


@dataclass
class PnPDMConfig:
    """PnP-DM settings; defaults are the reference's image config (``configs/experiments/sampler/pnp_dm.yaml``:
    ``nsteps 100`` = 99 iterations, ``rho`` 10 -> 0.3 at rate 0.9, "ve" SDE prior step on 99 levels from 100 to 0.02,
    Langevin ``1e-4`` x 100 where the exact step is unavailable)."""

    n_iters: int = 99  # K, split-Gibbs iterations
    rho_start: float = 10.0  # rho_0
    rho_decay: float = 0.9  # d
    rho_min: float = 0.3
    prior_steps: int = 99  # levels of the prior step's geometric grid
    prior_sigma_max: float = 100.0
    prior_sigma_min: float = 0.02
    likelihood: Literal["auto", "langevin"] = "auto"
    langevin_steps: int = 100
    langevin_lr: float = 1e-4
    grid_start: bool = False


def rho_schedule(config: PnPDMConfig) -> list[float]:
    """``rho_k = max(rho_0 d^k, rho_min)`` for ``k = 0 .. K-1``."""
    return [max(config.rho_start * config.rho_decay**k, config.rho_min) for k in range(config.n_iters)]


def prior_grid(prior: Denoiser, config: PnPDMConfig) -> list[float]:
    """The prior step's geometric grid, ``prior_steps`` levels from ``prior_sigma_max`` down to ``prior_sigma_min``,
    both clipped to the prior's trained range (EDM's "ve" discretisation)."""
    hi = min(config.prior_sigma_max, prior.levels.sigma_max)
    lo = max(config.prior_sigma_min, prior.levels.sigma_min)
    if not lo < hi:
        raise UserInputError(
            f"PnP-DM's prior grid [{config.prior_sigma_min}, {config.prior_sigma_max}] does not overlap the prior's "
            f"[{prior.levels.sigma_min:.4g}, {prior.levels.sigma_max:.4g}]; choose prior_sigma_min/max inside it."
        )
    n = config.prior_steps
    return [hi] if n == 1 else [hi * (lo / hi) ** (i / (n - 1)) for i in range(n)]


def prior_levels(prior: Denoiser, grid: list[float], rho: float, grid_start: bool) -> list[float]:
    """The levels one prior step visits at coupling ``rho`` (its last denoise goes to 0; empty: the identity)."""
    if grid_start:
        return [s for s in grid if s < rho]
    start = min(max(rho, prior.levels.sigma_min), grid[0])
    return [start, *(s for s in grid if s < start)]


def prior_step(prior: CountingDenoiser, z: Tensor, levels: list[float], generator: torch.Generator | None) -> Tensor:
    """Euler-Maruyama from ``z`` at ``levels[0]`` through ``levels`` to 0 (``len(levels)`` NFE; none: ``z``)."""
    x = z
    for s, s_next in zip(levels, [*levels[1:], 0.0][: len(levels)], strict=True):
        d = prior(x, s)
        if s_next == 0.0:
            x = d
        else:
            x = d + (s_next / s) ** 2 * (x - d) + math.sqrt(s * s - s_next * s_next) * randn_like(x, generator)
    return x


def exact_likelihood_step(problem: InverseProblem, x: Tensor, rho: float, generator: torch.Generator | None) -> Tensor:
    """One exact draw of ``z ~ N(Q^{-1}(A^T y / sigma_y^2 + x / rho^2), Q^{-1})`` (module docstring, step 1)."""
    y = problem.y.to(x)
    e_y = randn_like(y.expand(x.shape[0], *y.shape[1:]), generator)
    x_perturbed = x + rho * randn_like(x, generator)
    weight = problem.sigma_y**2 / rho**2
    return proximal_data_step(x_perturbed, problem, weight, y=y + problem.sigma_y * e_y)


def has_svd(problem: InverseProblem) -> bool:
    return isinstance(problem.operator, LinearOperator) and problem.operator.svd() is not None


def _check(config: PnPDMConfig) -> None:
    if config.n_iters < 1 or config.prior_steps < 1 or config.langevin_steps < 0:
        raise UserInputError(
            f"PnP-DM needs n_iters >= 1, prior_steps >= 1 and langevin_steps >= 0, got {config.n_iters}, "
            f"{config.prior_steps} and {config.langevin_steps}."
        )
    positive = {"rho_start": config.rho_start, "rho_min": config.rho_min, "langevin_lr": config.langevin_lr}
    positive |= {"prior_sigma_max": config.prior_sigma_max, "prior_sigma_min": config.prior_sigma_min}
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise UserInputError(f"PnP-DM setting {name} must be a positive finite number, got {value}.")
    if not 0 < config.rho_decay <= 1:
        raise UserInputError(f"PnP-DM's rho_decay must lie in (0, 1], got {config.rho_decay}.")
    if config.likelihood not in ("auto", "langevin"):
        raise UserInputError(f"PnP-DM's likelihood is 'auto' or 'langevin', got {config.likelihood!r}.")


@sampler(PnPDMConfig)
def pnpdm(
    prior: CountingDenoiser,
    problem: InverseProblem | None,
    x_init: Tensor,
    generator: torch.Generator | None,
    config: PnPDMConfig,
    callback: Callback | None,
    info: dict[str, Any],
) -> Tensor:
    assert problem is not None  # the @sampler decorator rejects a missing problem
    _check(config)
    exact = config.likelihood == "auto" and has_svd(problem)
    grid = prior_grid(prior, config)
    rhos = rho_schedule(config)
    cut = warm_cut(prior, rhos)  # > 0: a warm start runs the couplings at or below its level only
    rhos = rhos[cut:]
    info.update(likelihood="exact" if exact else "langevin", rho=rhos, nan_chains=0)
    warm: WarmStart | None = prior.warm
    x = x_init if warm is None else warm.like(x_init)
    with torch.no_grad():
        for k, rho in enumerate(rhos):
            if exact:
                z = exact_likelihood_step(problem, x, rho, generator)
            else:
                z, n_nan = _langevin(
                    problem, x, rho, problem.sigma_y, config.langevin_lr, config.langevin_steps, True, generator
                )
                info["nan_chains"] += n_nan
            x = prior_step(prior, z, prior_levels(prior, grid, rho, config.grid_start), generator)
            notify(callback, i=k, total=len(rhos), x=x, z=z, rho=rho)
    info["nan_chains"] = int(info["nan_chains"])
    return x


def _scaled(n_iters: int, prior_steps: int, rho_min: float) -> dict[str, Any]:
    """The reference's annealing (``rho`` 10 -> ``rho_min`` at rate 0.9 over 99 iterations) on ``n_iters`` iterations
    (rate ``0.9^(99 / n_iters)``: the same span of ``rho``) and a ``prior_steps``-level prior grid."""
    return {"n_iters": n_iters, "rho_decay": 0.9 ** (99 / n_iters), "rho_min": rho_min, "prior_steps": prior_steps}


SPEC = SamplerSpec(
    name="pnpdm",
    run=pnpdm,
    config_cls=PnPDMConfig,
    presets={
        # configs/experiments/sampler/pnp_dm.yaml (the paper's Tables 3-4): the defaults.
        "paper-image": {},
        # the point chosen on the exact-posterior benchmark's validation problems with four points per competitor
        # (evaluation/gmm/rounds/16-competitors; {} = its reference settings kept).
        "gmm": {},
        # configs/exp_sound/sampler/pnp_dm.yaml: rho_min 1e-3, forced Langevin of step 1e-9 x 100 (module docstring).
        "paper-audio": {"rho_min": 1e-3, "likelihood": "langevin", "langevin_lr": 1e-9, "langevin_steps": 100},
        # The image setting on 20 iterations and a 10-level prior grid (98 NFE on the Fashion-MNIST pixel prior, as
        # the other samplers' `fast`).
        "fast": _scaled(20, 10, 0.3),
        # The reference's audio annealing (rho 10 -> 1e-3) on 20 iterations and a 13-level prior grid (95 NFE per
        # segment on the audio prior, as MGDM `audio-fast`'s NFE + VJP), exact likelihood step (the mixture's SVD).
        "audio-fast": _scaled(20, 13, 1e-3),
        # `audio-fast` at the point chosen on a held-out-timbre validation split with the same 6-point budget as every
        # audio sampler (evaluation/separation/tuning.yaml; evaluation/results/separation_tuning.md): the preset itself.
        "audio-tuned": _scaled(20, 13, 1e-3),
    },
    needs_linear=False,
    warm_start=True,
    summary="PnP-DM: split Gibbs with annealed coupling rho_k, exact (SVD) or Langevin likelihood step, EDM prior step",
)
