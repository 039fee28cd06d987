r"""Noise schedules and the conversions between the two conventions.

The project's prior convention is variance exploding (EDM / Karras): ``x = x0 + sigma * n``.
A variance-preserving (DDPM) state with cumulative product ``abar`` maps onto it exactly by

.. math::  x_{vp} = \sqrt{\bar\alpha}\, x_{ve}, \qquad \bar\alpha = 1 / (1 + \sigma^2),
           \qquad \sigma = \sqrt{(1 - \bar\alpha) / \bar\alpha}.

Samplers that work on integer diffusion indices (MGDM, DPS, DDIM, ...) use a :class:`NoiseLevels`
table: ``sigmas[k]`` for ``k = 0..T`` with ``sigmas[0] = 0`` (clean data), increasing in ``k``.
This is the "padded" array of the MGDM reference (``abar[0] = 1``, ``abar[k] = abar_model[k-1]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mgdm_audio.core.errors import UserInputError


def sigma_to_abar(sigma: Tensor | float) -> Tensor:
    """``abar = 1 / (1 + sigma^2)`` (float64)."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    return 1.0 / (1.0 + s * s)


def abar_to_sigma(abar: Tensor | float) -> Tensor:
    """``sigma = sqrt((1 - abar) / abar)`` (float64)."""
    a = torch.as_tensor(abar, dtype=torch.float64)
    return torch.sqrt((1.0 - a) / a)


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max)):
        raise UserInputError(f"sigma_min={sigma_min} and sigma_max={sigma_max} must be finite numbers.")
    if sigma_min <= 0 or sigma_min >= sigma_max:
        raise UserInputError(
            f"a noise schedule needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, "
            f"sigma_max={sigma_max}; swap or fix the two values."
        )


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    r"""The Karras et al. (2022) grid, decreasing from ``sigma_max`` to ``sigma_min`` (float64).

    .. math:: \sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{n-1}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho
    """
    _check_range(sigma_min, sigma_max)
    if n < 2:
        raise UserInputError(f"a Karras grid needs at least 2 points, got n={n}.")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def linear_beta_alphas_cumprod(n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear beta schedule: ``abar_k = prod_{j<=k} (1 - beta_j)`` for ``k = 0..n-1``."""
    betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def scaled_linear_alphas_cumprod(n: int = 1000, beta_start: float = 0.0015, beta_end: float = 0.0195) -> Tensor:
    """Latent diffusion's "linear" schedule: ``beta_k = linspace(sqrt(b0), sqrt(b1), n)_k^2``."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


@dataclass(frozen=True)
class NoiseLevels:
    """Discrete table of noise levels ``sigmas[k]``, ``k = 0..T``; index 0 is clean data.

    ``abar[k] = 1 / (1 + sigmas[k]^2)`` is the matching VP cumulative product (``abar[0] = 1``).
    """

    sigmas: Tensor

    def __post_init__(self) -> None:
        s = torch.as_tensor(self.sigmas, dtype=torch.float64)
        object.__setattr__(self, "sigmas", s)
        if s.ndim != 1 or s.numel() < 3:
            raise UserInputError("a NoiseLevels table needs a 1-D tensor of at least 3 sigmas.")
        if s[0] != 0:
            raise UserInputError(f"NoiseLevels.sigmas[0] must be 0 (clean data), got {float(s[0])}.")
        if not torch.all(torch.isfinite(s)) or not torch.all(s[1:] > s[:-1]):
            raise UserInputError("NoiseLevels.sigmas must be finite and strictly increasing.")

    @property
    def T(self) -> int:
        """The largest index (the table has ``T + 1`` entries)."""
        return self.sigmas.numel() - 1

    @property
    def abar(self) -> Tensor:
        return sigma_to_abar(self.sigmas)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[1])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timesteps(self, n: int) -> Tensor:
        """``floor(linspace(0, T - 1, n))`` as int64, the reference's ``linspace(0, 999, N)`` grid.

        ``timesteps[0] = 0`` and ``timesteps[-1] = T - 1`` (the noisiest index is never used, as in
        the reference code).
        """
        if n < 3 or n > self.T:
            raise UserInputError(f"the number of diffusion steps must be in [3, {self.T}], got {n}.")
        return torch.linspace(0, self.T - 1, n, dtype=torch.float64).floor().long()

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor, clip_min: float = 1e-6) -> NoiseLevels:
        """The padded table of a DDPM model: ``abar[0] = 1``, ``abar[k] = clip(abar_model[k-1])``."""
        a = torch.as_tensor(alphas_cumprod, dtype=torch.float64).clamp(clip_min, 1.0)
        if a.ndim != 1 or not torch.all(a[1:] < a[:-1]):
            raise UserInputError("alphas_cumprod must be a strictly decreasing 1-D sequence.")
        padded = torch.cat([torch.ones(1, dtype=torch.float64), a])
        return cls(abar_to_sigma(padded))

    @classmethod
    def karras(cls, sigma_min: float, sigma_max: float, rho: float = 7.0, n: int = 1000) -> NoiseLevels:
        """A Karras grid of ``n`` levels plus the clean level, indexed from clean to noisiest.

        This is how the MGDM reference exposes a VE (EDM) prior on an integer grid (audio:
        ``sigma_min = 5e-4, sigma_max = 20, rho = 3``).
        """
        grid = karras_sigmas(n, sigma_min, sigma_max, rho).flip(0)
        return cls(torch.cat([torch.zeros(1, dtype=torch.float64), grid]))

    def index_of(self, sigma: Tensor) -> Tensor:
        """Fractional index of ``sigma`` by linear interpolation in ``log sigma`` (float64).

        Exact table values map to their integer index; ``sigma = 0`` maps to 0.
        """
        s = torch.as_tensor(sigma, dtype=torch.float64).to(self.sigmas.device)
        log_table = self.sigmas[1:].log()
        ls = s.clamp(min=self.sigma_min, max=self.sigma_max).log()
        hi = torch.searchsorted(log_table, ls.contiguous()).clamp(1, log_table.numel() - 1)
        lo = hi - 1
        frac = (ls - log_table[lo]) / (log_table[hi] - log_table[lo])
        idx = 1 + lo.double() + frac
        return torch.where(s <= 0, torch.zeros_like(idx), idx)
