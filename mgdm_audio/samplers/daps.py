r"""DAPS, decoupled annealing posterior sampling (Zhang et al. 2024/2025), as in the MGDM reference's ``daps.py``.

DAPS works in the VE/EDM convention with the prior's denoiser ``D(x, sigma)`` directly. On the annealing grid
(poly-7, ``M`` levels from ``sigma_max`` to ``sigma_min``, then ``sigma_M = 0``)

.. math:: \sigma_i = \big(\sigma_{max}^{1/7} + \tfrac{i}{M-1}(\sigma_{min}^{1/7} - \sigma_{max}^{1/7})\big)^7,

it starts at ``x = sigma_max * x_init`` (a warm start: ``x_hat + sigma_c x_init``, ``i >= c`` only) and for
``i = 0 .. M-1``:

1. **ODE reverse.** An inner poly-7 grid of ``ode_steps`` sigmas from ``sigma_i`` down to ``inner_sigma_min``, then 0;
   Euler steps of the probability-flow ODE ``x <- x + max(sigma_j (sigma_j - sigma_{j+1}), 0) (D(x; sigma_j) - x) /
   sigma_j^2`` give ``x0hat`` (``ode_steps`` NFE).
2. **Langevin.** ``langevin_steps`` steps started at ``x0hat`` on
   ``U(x) = ||y - A(x)||^2 / (2 tau^2) + ||x - x0hat||^2 / (2 sigma_i^2)``:
   ``x <- x - lr_i grad U(x) + sqrt(2 lr_i) z`` with ``lr_i = lr (1 + (i / M)(lr_min_ratio - 1))``.
   The gradient goes through ``A`` only: ``A^T (A x - y) / tau^2`` for linear operators, autograd through ``A``
   otherwise. This gives ``x0y``.
3. **Re-noise.** ``x = x0y + sigma_{i+1} z``. The final ``x`` (``sigma_M = 0``) is returned.

Cost: ``M * ode_steps`` NFE (1000 for the reference's ``M = 200``, 5 inner steps) and no VJP through the denoiser;
``M * langevin_steps`` gradients of the data term (VJPs of ``A`` only, for non-linear operators).

Notes and quirk flags:

* **VPPrecond.** The reference turns a discrete VP eps-net into an EDM denoiser through ``VPPrecond`` with a
  hard-coded ``beta = (0.1, 19.9)`` time map, which is wrong for non-DDPM-linear schedules (LDM). That quirk does not
  arise here: every prior of this package already is a VE denoiser ``D(x, sigma)`` (the VP adapters invert the
  model's own ``alphas_cumprod`` table), so DAPS calls it directly.
* ``clip_sigmas`` (default True): ``sigma_max``, ``sigma_min`` and ``inner_sigma_min`` are clipped to the prior's
  ``[levels.sigma_min, levels.sigma_max]`` so the denoiser is never queried outside its trained range (the reference
  queries VPPrecond at ``0.01 < 0.0105`` and the audio model at ``1e-4 < 5e-4``). False: use the values as given.
* ``tau_from_sigma_y`` (default False, the reference): DAPS's ``tau`` is a fixed likelihood std, a tuning knob, not the
  measurement noise ``sigma_y`` (the reference never reads ``sigma_y``). True sets ``tau = sigma_y``, the exact
  Gaussian likelihood.
* ``nan_zero_whole_batch`` (default True, the reference): as soon as any entry of the Langevin state is NaN, the
  Langevin loop stops and returns zeros **for the whole batch**. False zeroes (and freezes at zero for the rest of
  that Langevin loop) only the chains that produced a NaN.
* The reference draws its own start noise (``randn_like(initial_noise) * sigma_max``, ignoring the given noise);
  here the start is ``sigma_max * x_init`` so that the seed contract holds.
* Per-task learning rates of the reference's image config are in :data:`DAPS_TASK_LR` (its driver,
  ``test_images.py`` of Badr-MOUFAD/mgdm, ignores them); pass ``lr=DAPS_TASK_LR[task]`` to use one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.core.denoiser import CountingDenoiser, Denoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.rng import randn_like
from mgdm_audio.samplers.base import Callback, SamplerSpec, notify, sampler, ve_start, warm_cut

DAPS_TASK_LR: dict[str, float] = {
    "phase_retrieval": 5e-5,
    "high_dynamic_range": 2e-5,
    "random_99": 1e-4,
    "inpainting_center": 5e-5,
    "motion_blur": 5e-5,
    "nonlinear_blur": 5e-5,
    "outpainting_half": 5e-5,
    "outpainting_expand": 5e-5,
    "sr4": 1e-4,
    "sr16": 1e-4,
}
"""The reference's per-task Langevin ``lr`` for images (``tau = 0.01`` and ``lr_min_ratio = 0.01`` everywhere)."""


@dataclass
class DAPSConfig:
    """DAPS settings; defaults are the reference's image config (``configs/experiments/sampler/daps.yaml``)."""

    annealing_steps: int = 200  # M, the annealing levels sigma_0 .. sigma_{M-1}
    sigma_max: float = 100.0  # sigma_0
    sigma_min: float = 0.1  # sigma_{M-1}
    inner_sigma_min: float = 0.01  # the last sigma of each inner ODE grid (then 0)
    ode_steps: int = 5  # Euler steps of the inner probability-flow ODE (its NFE per level)
    langevin_steps: int = 50  # Langevin steps per level
    lr: float = 5e-5  # lr, the Langevin step at level 0
    tau: float = 0.01  # tau, the likelihood std of U(x)
    lr_min_ratio: float = 0.01  # lr_{M} / lr: the Langevin step's linear decay over the levels
    rho: float = 7.0  # the poly-rho exponent of both grids
    tau_from_sigma_y: bool = False
    nan_zero_whole_batch: bool = True
    clip_sigmas: bool = True


def poly_sigmas(n: int, sigma_hi: float, sigma_lo: float, rho: float = 7.0) -> list[float]:
    """DAPS's ``poly-rho`` grid of ``n`` sigmas from ``sigma_hi`` to ``sigma_lo``, then a trailing 0 (float64).

    Unlike :func:`~mgdm_audio.core.schedules.karras_sigmas` it accepts ``n = 1`` and ``sigma_lo > sigma_hi`` (an
    inner grid started below ``inner_sigma_min`` increases; its negative Euler factors are clipped to 0).
    """
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    hi, lo = sigma_hi ** (1 / rho), sigma_lo ** (1 / rho)
    return [*((hi + ramp * (lo - hi)) ** rho).tolist(), 0.0]


def _check(config: DAPSConfig, problem: InverseProblem | None) -> None:
    assert problem is not None  # the @sampler decorator rejects a missing problem
    if config.annealing_steps < 1 or config.ode_steps < 1 or config.langevin_steps < 0:
        raise UserInputError(
            f"DAPS needs annealing_steps >= 1, ode_steps >= 1 and langevin_steps >= 0, got {config.annealing_steps}, "
            f"{config.ode_steps} and {config.langevin_steps}."
        )
    positive = {"sigma_max": config.sigma_max, "sigma_min": config.sigma_min, "inner_sigma_min": config.inner_sigma_min}
    positive |= {"lr": config.lr, "tau": config.tau, "lr_min_ratio": config.lr_min_ratio, "rho": config.rho}
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise UserInputError(f"DAPS setting {name} must be a positive finite number, got {value}.")
    if config.sigma_min >= config.sigma_max:
        raise UserInputError(f"DAPS needs sigma_min < sigma_max, got {config.sigma_min} and {config.sigma_max}.")


def _sigma_range(prior: Denoiser, config: DAPSConfig) -> tuple[float, float, float]:
    """``(sigma_max, sigma_min, inner_sigma_min)``, clipped to the prior's range when ``clip_sigmas``."""
    hi, lo, inner = config.sigma_max, config.sigma_min, config.inner_sigma_min
    if config.clip_sigmas:
        p_lo, p_hi = prior.levels.sigma_min, prior.levels.sigma_max
        hi, lo, inner = min(hi, p_hi), min(max(lo, p_lo), p_hi), min(max(inner, p_lo), p_hi)
        if lo >= hi:
            raise UserInputError(
                f"DAPS's sigma range [{config.sigma_min}, {config.sigma_max}] does not overlap the prior's "
                f"[{p_lo:.4g}, {p_hi:.4g}]; choose sigma_min/sigma_max inside it."
            )
    return hi, lo, inner


def langevin_lr(config: DAPSConfig, i: int) -> float:
    """``lr_i = lr (1 + (i / M)(lr_min_ratio - 1))``: linear decay from ``lr`` towards ``lr * lr_min_ratio``."""
    return config.lr * (1 + (i / config.annealing_steps) * (config.lr_min_ratio - 1))


def _ode_reverse(prior: CountingDenoiser, x: Tensor, sigmas: list[float]) -> Tensor:
    """Euler steps of the PF-ODE along ``sigmas`` (last entry 0): ``len(sigmas) - 1`` NFE."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        coef = max(s * (s - s_next), 0.0) / (s * s)
        x = x + coef * (prior(x, s) - x)
    return x


def _langevin(
    problem: InverseProblem,
    x0hat: Tensor,
    sigma: float,
    tau: float,
    lr: float,
    n_steps: int,
    whole_batch: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor, int | Tensor]:
    """Unadjusted Langevin on ``||y - A x||^2/(2 tau^2) + ||x - x0hat||^2/(2 sigma^2)``.

    Returns ``(x, number of chains zeroed for NaN)``."""
    x = x0hat.clone()
    dead = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    on_cpu, any_dead = x.device.type == "cpu", False
    noise_scale = math.sqrt(2 * lr)
    for _ in range(n_steps):
        grad = -problem.adjoint_residual(x) / tau**2 + (x - x0hat) / sigma**2
        x = x - lr * grad + noise_scale * randn_like(x, generator)
        if on_cpu and not any_dead and not bool(torch.isnan(x).any()):
            continue  # the common case on CPU: no NaN and no chain zeroed, nothing to reset (on GPU: no host sync)
        nan = torch.isnan(x).reshape(x.shape[0], -1).any(1)
        if whole_batch and on_cpu and bool(nan.any()):
            return torch.zeros_like(x), x.shape[0]
        dead = dead | nan
        any_dead = on_cpu and bool(dead.any())
        x = torch.where(dead.reshape(-1, *([1] * (x.ndim - 1))), torch.zeros_like(x), x)
    if whole_batch and not on_cpu and bool(dead.any()):  # on GPU one host sync per call, not one per step
        return torch.zeros_like(x), x.shape[0]
    return x, int(dead.sum()) if on_cpu else dead.sum()  # a device tensor on GPU: summed without a sync


@sampler(DAPSConfig)
def daps(
    prior: CountingDenoiser,
    problem: InverseProblem | None,
    x_init: Tensor,
    generator: torch.Generator | None,
    config: DAPSConfig,
    callback: Callback | None,
    info: dict[str, Any],
) -> Tensor:
    _check(config, problem)
    assert problem is not None
    sigma_max, sigma_min, inner_min = _sigma_range(prior, config)
    tau = problem.sigma_y if config.tau_from_sigma_y else config.tau
    m = config.annealing_steps
    sigmas = poly_sigmas(m, sigma_max, sigma_min, config.rho)
    info.update(sigma_max=sigma_max, sigma_min=sigma_min, inner_sigma_min=inner_min, tau=tau, nan_chains=0)
    cut = warm_cut(prior, sigmas[:m])  # > 0: a warm start anneals from level cut on
    x = ve_start(prior, x_init, sigmas[cut])
    with torch.no_grad():
        for i in range(cut, m):
            x0hat = _ode_reverse(prior, x, poly_sigmas(config.ode_steps, sigmas[i], inner_min, config.rho))
            lr_i = langevin_lr(config, i)
            x0y, n_nan = _langevin(
                problem, x0hat, sigmas[i], tau, lr_i, config.langevin_steps, config.nan_zero_whole_batch, generator
            )
            info["nan_chains"] += n_nan
            x = x0y + sigmas[i + 1] * randn_like(x0y, generator) if sigmas[i + 1] > 0 else x0y
            notify(callback, i=i, total=m, x=x, x0=x0y, sigma=sigmas[i])
    info["nan_chains"] = int(info["nan_chains"])  # one host sync per run on GPU
    return x


PAPER_AUDIO: dict[str, float | int] = {
    "annealing_steps": 200,
    "sigma_max": 20.0,
    "sigma_min": 1e-3,
    "inner_sigma_min": 1e-4,
    "lr": 1e-5,
    "tau": 0.005,
    "lr_min_ratio": 1e-3,
}
"""The MGDM reference's audio DAPS config (``configs/exp_sound/sampler/daps.yaml``)."""


#: A cheap image setting; the image presets are it plus their validation-chosen values.
_FAST: dict[str, Any] = {"annealing_steps": 50}

SPEC = SamplerSpec(
    name="daps",
    run=daps,
    config_cls=DAPSConfig,
    presets={
        "paper-image": {},
        # the point chosen on the exact-posterior benchmark's validation problems with four points per competitor
        # (evaluation/gmm/rounds/16-competitors; {} = its reference settings kept).
        "gmm": {"lr": 0.0002},
        "paper-audio": PAPER_AUDIO,
        "fast": _FAST,
        # `fast` at the point chosen on Fashion-MNIST validation images with the same 3-point budget as every image
        # sampler (evaluation/image/choice.md); `--preset default` of the image benchmark runs it.
        "image": {**_FAST, "lr": 0.0002},
        # The latent prior's validation run chose `fast` itself (evaluation/image/choice_latent.md).
        "image-latent": {**_FAST},
        # `paper-audio` (configs/exp_sound/sampler/daps.yaml of the MGDM reference: sigma 20 -> 1e-3, inner 1e-4,
        # 5 ODE steps, 50 Langevin steps of lr 1e-5, tau 0.005, lr_min_ratio 1e-3) on 20 annealing levels instead of
        # 200: 100 NFE per segment, no VJP, about MGDM `audio-fast`'s 68 NFE + 31 VJP per segment.
        "audio-fast": {**PAPER_AUDIO, "annealing_steps": 20},
        # `audio-fast` at the point chosen on a held-out-timbre validation split with the same 6-point budget as every
        # audio sampler (evaluation/separation/tuning.yaml; evaluation/results/separation_tuning.md).
        "audio-tuned": {**PAPER_AUDIO, "annealing_steps": 20, "lr": 1e-6},
    },
    needs_linear=False,
    warm_start=True,
    summary="decoupled annealing posterior sampling: PF-ODE to x0hat, Langevin on the data term, re-noise",
)
