r"""Trivial denoisers to compare an audio prior with, and the denoising loss per noise band of all of them.

With the prior's EDM preconditioning (``sigma_d`` its data std) and stems ``(B, S, T)``:

* :class:`SilenceDenoiser`: ``D(x, sigma) = 0``, the per-stem mean of zero-mean audio; its EDM-weighted loss on
  data of RMS ``r`` is ``lambda(sigma) r^2``, ``lambda = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2``;
* :class:`SkipPathDenoiser`: ``D(x, sigma) = clamp(c_skip x)``, ``c_skip = sigma_d^2 / (sigma^2 + sigma_d^2)``, the
  preconditioning with the network output ``F = 0`` (an untrained prior); before clamping its loss is
  ``(sigma^2 r^2 / sigma_d^2 + sigma_d^2) / (sigma^2 + sigma_d^2)`` (1 when ``r = sigma_d``);
* :class:`WienerDenoiser`: ``D(x, sigma) = clamp(W_sigma x)``, a per-stem Wiener filter
  ``P_s(f) / (P_s(f) + sigma^2)`` with power spectra fitted to training chunks
  (:class:`~mgdm_audio.audio.model.SpectralSkip`), the MMSE denoiser of a stationary Gaussian prior.

:func:`denoising_bands` scores a prior and these baselines with the trainer's validation protocol
(:class:`~mgdm_audio.training.trainer.Validator`: one sigma per band and item, uniform in ``ln sigma``, fixed noise,
EDM-weighted loss ``lambda(sigma) mean((D(x0 + sigma n, sigma) - x0)^2)``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SILENCE = "silence D=0"
SKIP_PATH = "skip path D=c_skip x"
WIENER = "Wiener D=W x (train PSD)"


class SilenceDenoiser(nn.Module):
    """``D(x, sigma) = 0`` (predict silence), with the prior's EDM loss weight."""

    def __init__(self, prior: nn.Module) -> None:
        super().__init__()
        self.loss_weight = prior.loss_weight

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return torch.zeros_like(x)


class SkipPathDenoiser(nn.Module):
    """``D(x, sigma) = clamp(c_skip x)``: the prior's EDM preconditioning with the network output set to 0."""

    def __init__(self, prior: nn.Module) -> None:
        super().__init__()
        self.loss_weight = prior.loss_weight
        self.sigma_data, self.clamp = prior.edm.sigma_data, prior.edm.clamp_output

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        c_skip = self.sigma_data**2 / (sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2 + self.sigma_data**2)
        out = c_skip * x
        return out.clamp(-1.0, 1.0) if self.clamp else out


class WienerDenoiser(nn.Module):
    """``D(x, sigma) = clamp(W_sigma x)``: a per-stem Wiener filter whose PSD is fitted to ``train_chunks``."""

    def __init__(self, prior: nn.Module, train_chunks: Tensor) -> None:
        from mgdm_audio.audio.model import SpectralSkip, SpectralSkipConfig

        super().__init__()
        self.loss_weight = prior.loss_weight
        self.clamp = prior.edm.clamp_output
        t = train_chunks.shape[-1]  # the shipped resolution (1025 bins, 2048 padding), reduced for short chunks
        config = SpectralSkipConfig(bins=min(1025, t // 2 + 1), pad=min(2048, t // 2))
        self.filter = SpectralSkip(train_chunks.shape[1], prior.edm.sigma_data, config)
        self.filter.fit(train_chunks)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        out = self.filter(x, sigma.reshape(-1))
        return out.clamp(-1.0, 1.0) if self.clamp else out


def denoising_bands(
    prior: nn.Module, chunks: Tensor, batch_size: int = 8, train_chunks: Tensor | None = None
) -> dict[str, dict[str, float]]:
    """EDM-weighted loss per ln-sigma band (the trainer's Validator, default bands) of ``prior`` (key ``"prior"``)
    and the baselines (with ``train_chunks``, also the Wiener filter fitted to them)."""
    from mgdm_audio.training.trainer import ValidationSettings, Validator

    settings = ValidationSettings(items=chunks.shape[0], batch_size=batch_size)
    validator = Validator(chunks, settings, torch.device("cpu"))  # type: ignore[arg-type]
    denoisers = {"prior": prior, SILENCE: SilenceDenoiser(prior), SKIP_PATH: SkipPathDenoiser(prior)}
    if train_chunks is not None:
        denoisers[WIENER] = WienerDenoiser(prior, train_chunks)
    return {name: validator(module) for name, module in denoisers.items()}
