r"""EDM preconditioning (Karras et al. 2022), shared by every prior the package trains (audio and image).

A network ``F(x_in, c_noise)`` becomes the core's VE denoiser through

.. math::
    c_{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2},\quad
    c_{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}},\quad
    c_{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}},\quad c_{noise} = \tfrac14 \ln \sigma,

    D(x, \sigma) = \mathrm{clamp}_{[-1, 1]}\big(c_{skip} x + c_{out} F(c_{in} x, c_{noise})\big)

(the clamp only when ``clamp_output``), trained with ``ln sigma ~ N(P_mean, P_std^2)`` and the weight
``lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2`` (:meth:`EDMPreconditioned.loss_weight`), which
makes the weighted denoising loss the plain MSE of ``F`` against its target. ``sigma_d`` (``sigma_data``) is the
standard deviation of the data. The noise-level table ``levels`` is a Karras grid for the index-based samplers.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mgdm_audio.core.denoiser import batch_sigma
from mgdm_audio.core.schedules import NoiseLevels


@dataclass(frozen=True)
class EDMConfig:
    """EDM parameters (MSDM: ``sigma_data = 0.2``, hard clamp) and the noise-level table of the prior."""

    sigma_data: float = 0.2
    clamp_output: bool = True
    sigma_min: float = 1e-4
    sigma_max: float = 20.0
    rho: float = 7.0
    levels: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def edm_coefficients(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` of EDM for a tensor of sigmas (see the module docstring)."""
    s2, d2 = sigma * sigma, sigma_data * sigma_data
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1 / (s2 + d2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


class NoiseEmbedding(nn.Module):
    """Learned Fourier features of ``c_noise`` (``[sin 2 pi w c, cos 2 pi w c, c]``) -> two-layer GELU MLP."""

    def __init__(self, fourier_features: int, embedding_features: int) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(fourier_features))
        self.mlp = nn.Sequential(
            nn.Linear(2 * fourier_features + 1, embedding_features),
            nn.GELU(),
            nn.Linear(embedding_features, embedding_features),
            nn.GELU(),
        )

    def forward(self, c_noise: Tensor) -> Tensor:
        c = c_noise.reshape(-1, 1)
        phase = 2 * math.pi * c * self.frequencies
        return self.mlp(torch.cat([phase.sin(), phase.cos(), c], dim=1))


class EDMPreconditioned(nn.Module):
    """``D(x, sigma)`` (the core's Denoiser protocol) around a network ``self.net(x_in, c_noise)``.

    Subclasses set ``self.net``; ``x`` is ``(B, ...)`` and ``sigma`` a float or a ``(B,)`` tensor.
    """

    net: nn.Module
    #: Run ``self.net`` under bf16 autocast (the network only: the coefficients, the skip path and the clamp stay in
    #: ``x``'s dtype, and ``F`` is cast back to it). Off by default; an inference option for GPUs.
    autocast_bf16: bool = False

    def __init__(self, edm: EDMConfig | None = None) -> None:
        super().__init__()
        self.edm = edm or EDMConfig()
        with torch.device("cpu"):  # the table is always a CPU float64 tensor, also under a meta/cuda default
            self.levels = NoiseLevels.karras(self.edm.sigma_min, self.edm.sigma_max, self.edm.rho, self.edm.levels)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = batch_sigma(sigma, x).to(x.dtype).clamp(min=1e-20)
        shape = (-1, *([1] * (x.ndim - 1)))
        c_skip, c_out, c_in, c_noise = (v.reshape(shape) for v in edm_coefficients(s, self.edm.sigma_data))
        # only entered when asked: a disabled autocast context would switch off a caller's (the trainer's) autocast
        bf16 = torch.autocast(x.device.type, dtype=torch.bfloat16) if self.autocast_bf16 else contextlib.nullcontext()
        with bf16:
            f = self.net(c_in * x, c_noise.reshape(-1))
        out = self.skip(x, s, c_skip) + c_out * f.to(x.dtype)
        return out.clamp(-1.0, 1.0) if self.edm.clamp_output else out

    def skip(self, x: Tensor, sigma: Tensor, c_skip: Tensor) -> Tensor:
        """The skip path ``c_skip x``: the MMSE estimate of ``x0`` if the data were white with std ``sigma_d``.

        ``sigma`` is ``(B,)``; subclasses may replace it by a better linear estimate (e.g. a Wiener filter).
        """
        return c_skip * x

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """EDM's ``lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2``."""
        d = self.edm.sigma_data
        return (sigma * sigma + d * d) / (sigma * d) ** 2
