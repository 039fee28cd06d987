r"""Spectral balance and dynamics of (generated) stems, against real ones.

* :func:`high_band_fraction`: the fraction of a signal's energy above ``c`` times the Nyquist frequency,
  :math:`\sum_{f \ge c f_N} |X(f)|^2 / \sum_f |X(f)|^2` (white noise: ``1 - c``);
* :func:`envelope_variation`: the coefficient of variation (std / mean over frames) of the RMS of ``frame``-sample
  frames (a steady tone: 0; stationary white noise: about ``1 / sqrt(2 frame)``; a drum pattern: well above 1).

A prior that leaves noise in its samples shows it in the first; one that learned each stem's spectrum but not its
notes and hits generates stationary textures and shows it in the second.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def high_band_fraction(x: Tensor, cutoff_fraction: float = 0.25) -> Tensor:
    """Fraction of each signal's energy above ``cutoff_fraction`` of the Nyquist frequency, ``(..., T) -> (...)``."""
    power = torch.fft.rfft(x.double(), dim=-1).abs().pow(2)
    cut = int(round(cutoff_fraction * (power.shape[-1] - 1)))
    return (power[..., cut:].sum(-1) / power.sum(-1).clamp(min=1e-30)).float()


def envelope_variation(x: Tensor, frame: int = 512) -> Tensor:
    """Coefficient of variation of the RMS of ``frame``-sample frames, ``(..., T) -> (...)``."""
    frames = x.double().unfold(-1, frame, frame)
    rms = frames.pow(2).mean(-1).sqrt()
    return (rms.std(-1) / rms.mean(-1).clamp(min=1e-30)).float()


def _median_per_stem(generated: Tensor, real: Tensor, stems: list[str]) -> dict[str, dict[str, float]]:
    return {
        name: {"generated": float(generated[:, k].median()), "real": float(real[:, k].median())}
        for k, name in enumerate(stems)
    }


def spectral_balance(generated: Tensor, real: Tensor, stems: list[str], sample_rate: int) -> dict[str, Any]:
    """Median (over chunks ``(N, S, T)``) fraction of energy above ``sample_rate / 8`` per stem, generated and real."""
    per_stem = _median_per_stem(high_band_fraction(generated), high_band_fraction(real), stems)
    return {"cutoff_hz": sample_rate / 8, "per_stem": per_stem}


def dynamics(generated: Tensor, real: Tensor, stems: list[str], frame: int = 512) -> dict[str, Any]:
    """Median (over chunks ``(N, S, T)``) :func:`envelope_variation` per stem, generated and real."""
    per_stem = _median_per_stem(envelope_variation(generated, frame), envelope_variation(real, frame), stems)
    return {"frame": frame, "per_stem": per_stem}
