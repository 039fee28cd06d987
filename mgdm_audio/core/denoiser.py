r"""The denoiser protocol and adapters for models trained in other conventions.

A prior is a denoiser in the variance-exploding convention,

.. math:: D(x, \sigma) \approx \mathbb{E}[x_0 \mid x_0 + \sigma n = x], \qquad n \sim \mathcal N(0, I),

with a :class:`~mgdm_audio.core.schedules.NoiseLevels` table (``levels``) that gives its
``sigma_min``, ``sigma_max`` and the discrete grid it was trained on. ``sigma`` is a float, a 0-d
tensor, or a tensor of shape ``(B,)`` (one level per chain).

Adapters:

* :class:`VEDenoiser` wraps a function ``f(x, sigma_b)`` that already is such a denoiser (EDM/Karras
  preconditioned networks, the analytic mixture denoiser).
* :class:`VPEpsDenoiser` wraps a discrete DDPM epsilon network ``eps(x_vp, t)`` with its
  ``alphas_cumprod``: ``x_vp = sqrt(abar) x``, ``D = x - sigma * eps(x_vp, t(sigma))``.
* :class:`VPVDenoiser` wraps a v-prediction network: ``D = sqrt(abar) x_vp - sqrt(1 - abar) v``.
* :class:`VPSampleDenoiser` wraps a network predicting the clean sample: ``D = net(x_vp, t)``.
* :class:`CountingDenoiser` counts network forward evaluations (NFE, one per batched call) and
  vector-Jacobian products through the network (VJP, one per backward pass reaching the output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mgdm_audio.core.errors import InternalError
from mgdm_audio.core.rng import start_prefetch
from mgdm_audio.core.schedules import NoiseLevels
from mgdm_audio.core.threads import adapt as adapt_threads


@runtime_checkable
class Denoiser(Protocol):
    """``D(x, sigma) -> E[x0 | x]`` in the VE convention, plus its noise-level table."""

    levels: NoiseLevels

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor: ...


def batch_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` as a float64 tensor of shape ``(B,)`` on ``x``'s device."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise InternalError(f"sigma must be a scalar or have shape ({x.shape[0]},), got {tuple(s.shape)}.")
    return s


def expand_as_batch(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-chain vector ``(B,)`` (or a scalar) to broadcast against ``x`` ``(B, ...)``,
    in ``x``'s dtype."""
    v = torch.as_tensor(v, device=x.device)
    if v.ndim == 0:
        return v.to(x.dtype)
    return v.to(x.dtype).reshape(v.shape[0], *([1] * (x.ndim - 1)))


class VEDenoiser:
    """A function ``fn(x, sigma_b)`` (``sigma_b`` of shape ``(B,)``, x's dtype) used as the prior."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], levels: NoiseLevels) -> None:
        self.fn = fn
        self.levels = levels

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return self.fn(x, batch_sigma(sigma, x).to(x.dtype))


class _VPNetwork:
    """Shared part of the VP adapters: table lookup of the network's time index for a sigma."""

    def __init__(
        self,
        net: Callable[[Tensor, Tensor], Tensor],
        alphas_cumprod: Tensor,
        reference_index_offset: bool = False,
        clip_min: float = 1e-6,
    ) -> None:
        self.net = net
        self.levels = NoiseLevels.from_alphas_cumprod(alphas_cumprod, clip_min=clip_min)
        # The padded table puts the model's step t at index t + 1. The MGDM reference calls the
        # network with the table index itself (one step noisier than the abar it uses); the flag
        # reproduces that offset, the default passes the matching model step.
        self.reference_index_offset = reference_index_offset

    def _time(self, s: Tensor) -> Tensor:
        k = self.levels.index_of(s)
        return k if self.reference_index_offset else k - 1.0


class VPEpsDenoiser(_VPNetwork):
    r"""A discrete VP epsilon network ``eps(x_vp, t)`` as a VE denoiser.

    ``x_vp = x / sqrt(1 + sigma^2)``, ``D(x, sigma) = x - sigma * eps(x_vp, t)``; ``t`` is the
    (fractional) model step whose ``alphas_cumprod`` equals ``1 / (1 + sigma^2)``.
    """

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = batch_sigma(sigma, x)
        x_vp = x * expand_as_batch(torch.rsqrt(1 + s * s), x)
        eps = self.net(x_vp, self._time(s).to(device=x.device, dtype=x.dtype))
        return x - expand_as_batch(s, x) * eps


class VPVDenoiser(_VPNetwork):
    r"""A v-prediction network: ``x0 = sqrt(abar) x_vp - sqrt(1 - abar) v(x_vp, t)``."""

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = batch_sigma(sigma, x)
        abar = 1 / (1 + s * s)
        x_vp = x * expand_as_batch(abar.sqrt(), x)
        v = self.net(x_vp, self._time(s).to(device=x.device, dtype=x.dtype))
        return expand_as_batch(abar.sqrt(), x) * x_vp - expand_as_batch((1 - abar).sqrt(), x) * v


class VPSampleDenoiser(_VPNetwork):
    r"""A VP network that predicts the clean sample: ``D(x, sigma) = net(x / sqrt(1 + sigma^2), t(sigma))``."""

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = batch_sigma(sigma, x)
        x_vp = x * expand_as_batch(torch.rsqrt(1 + s * s), x)
        return self.net(x_vp, self._time(s).to(device=x.device, dtype=x.dtype))


def vp_denoise(denoiser: Denoiser, x_vp: Tensor, abar: Tensor) -> Tensor:
    r"""Tweedie's estimate from a VP state: ``D_k(x_vp) = D(x_vp / sqrt(abar_k), sigma_k)``.

    ``abar`` is a scalar or a per-chain ``(B,)`` tensor in ``(0, 1)``; samplers never call it at
    the clean index (``abar = 1``), where the estimate is ``x_vp`` itself.
    """
    a = torch.as_tensor(abar, dtype=torch.float64, device=x_vp.device)
    sigma = torch.sqrt((1 - a) / a)
    if a.ndim == 0:
        a = a.expand(x_vp.shape[0])
        sigma = sigma.expand(x_vp.shape[0])
    return denoiser(x_vp * expand_as_batch(torch.rsqrt(a), x_vp), sigma)


class CountingDenoiser:
    """Counts NFE (forward calls) and VJP (backward passes reaching the output).

    A call counts once, or, with ``unit_batch`` (the sampler's number of chains), ``ceil(n / unit_batch)`` times for
    a batch of ``n``: a sampler that evaluates several candidates per chain in one stacked batch pays for each.
    """

    def __init__(self, inner: Denoiser, unit_batch: int | None = None, start_scale: str = "unit") -> None:
        self.inner = inner
        self.start_scale = start_scale  # the run's starting-noise convention (mgdm_audio.samplers.run)
        self.warm: Any = None  # the run's warm start, if any (mgdm_audio.samplers.base.WarmStart)
        self.levels = inner.levels
        self.unit_batch = unit_batch
        self.nfe = 0
        self.vjp = 0

    def _units(self, x: Tensor) -> int:
        return 1 if self.unit_batch is None else max(1, -(-x.shape[0] // self.unit_batch))

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        units = self._units(x)
        self.nfe += units
        adapt_threads()  # fewer torch threads while other processes are busy (mgdm_audio.core.threads)
        start_prefetch()  # the next noise draw runs beside the network (mgdm_audio.core.rng)
        out = self.inner(x, sigma)
        if out.requires_grad:
            out.register_hook(lambda grad: self._count_vjp(grad, units))
        return out

    def _count_vjp(self, grad: Tensor, units: int) -> Tensor:
        self.vjp += units
        return grad

    def reset(self) -> None:
        self.nfe = 0
        self.vjp = 0
