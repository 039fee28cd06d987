r"""Per-stem power spectral densities: the stationary-Gaussian view of the stems, in one place.

Used by the prior's Wiener skip path (:class:`~mgdm_audio.audio.model.SpectralSkip`) and by the separation
benchmark's ``wiener`` baseline (:func:`wiener_separation`). A PSD is a tensor ``(S, bins)`` on ``bins`` points
from 0 to Nyquist, scaled so that white noise of variance ``v`` has ``P = v`` everywhere (its mean over frequency
is the signal's variance, by Parseval).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mgdm_audio.core.errors import UserInputError

__all__ = [
    "filter_by_gain",
    "psd_on_rfft_grid",
    "stationary_gaussian_sample",
    "welch_psd",
    "wiener_posterior_sample",
    "wiener_separation",
]


def welch_psd(chunks: Tensor, bins: int) -> Tensor:
    """Welch estimate ``(S, bins)`` from ``chunks (N, S, T)``: Hann segments of ``2 (bins - 1)`` samples, half
    overlap, averaged over segments and chunks (float64 inside, ``chunks``' dtype out)."""
    n_fft = 2 * (bins - 1)
    if bins < 2 or chunks.ndim != 3 or chunks.shape[-1] < n_fft:
        raise UserInputError(f"a {bins}-bin PSD needs chunks (N, S, T >= {n_fft}), got {tuple(chunks.shape)}.")
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device=chunks.device)
    segments = chunks.double().unfold(-1, n_fft, n_fft // 2) * window  # (N, S, frames, n_fft)
    power = torch.fft.rfft(segments, dim=-1).abs().pow(2) / window.pow(2).sum()
    return power.mean(dim=(0, 2)).clamp(min=1e-12).to(chunks.dtype)


def psd_on_rfft_grid(psd: Tensor, length: int) -> Tensor:
    """``psd (S, bins)`` linearly interpolated to the ``length // 2 + 1`` rfft frequencies of ``length`` samples."""
    bins = psd.shape[-1]
    grid = torch.linspace(0.0, 1.0, length // 2 + 1, device=psd.device, dtype=torch.float64) * (bins - 1)
    low = grid.floor().long().clamp(max=bins - 2)
    frac = (grid - low).to(psd.dtype)
    return psd[..., low] * (1 - frac) + psd[..., low + 1] * frac


def filter_by_gain(
    x: Tensor,
    gain: Callable[[int], Tensor],
    pad: int,
    dtype: torch.dtype = torch.float32,
    padding: str = "reflect",
) -> Tensor:
    """Zero-phase filtering along the last axis: pad ``x`` by ``pad`` samples per side, multiply its rfft by
    ``gain(padded_length)`` (broadcast against ``(..., F)``), invert and crop back to ``T``. Computed in ``dtype``.

    ``padding="reflect"`` (at most ``T - 1`` per side) keeps the circular FFT from wrapping the end of ``x`` onto
    its start and keeps the edges at full level, but the operator is neither symmetric nor a contraction: with a
    gain in [0, 1] its norm can exceed 1 (measured 1.13 on a 1024-sample chunk), which repeated application (a
    sampler's Gibbs sweeps) amplifies. ``padding="zero"`` gives ``P^T C P`` with ``C`` circulant: symmetric, with
    the eigenvalues of the gain, so a denoiser built on it is a contraction (edges are attenuated instead).
    ``pad = 0`` is the plain circular filter (also symmetric, norm <= 1).
    """
    if padding not in ("reflect", "zero"):
        raise UserInputError(f"padding must be 'reflect' or 'zero', got {padding!r}.")
    t = x.shape[-1]
    p = min(pad, t - 1) if padding == "reflect" else max(pad, 0)
    if p > 0:
        shape = x.shape
        mode = "reflect" if padding == "reflect" else "constant"
        padded = F.pad(x.reshape(-1, 1, t), (p, p), mode=mode).reshape(*shape[:-1], t + 2 * p)
    else:
        padded = x
    length = padded.shape[-1]
    spectrum = torch.fft.rfft(padded.to(dtype), dim=-1) * gain(length)
    return torch.fft.irfft(spectrum, n=length, dim=-1)[..., p : p + t].to(x.dtype)


def wiener_separation(mix: Tensor, psd: Tensor, pad: int = 2048) -> Tensor:
    r"""Posterior mean of the stems given their sum under independent stationary Gaussian priors: ``(S, T)``.

    .. math:: \hat s_k = \mathcal F^{-1}\Big[\frac{P_k(f)}{\sum_j P_j(f)}\,\mathcal F[\mathrm{reflect\_pad}(m)]\Big]

    (cropped); the masks sum to 1, so the estimates sum to the mix. ``mix`` is ``(T,)``.
    """

    def masks(length: int) -> Tensor:
        power = psd_on_rfft_grid(psd.double(), length)
        return power / power.sum(0, keepdim=True)

    return filter_by_gain(mix.reshape(1, -1), masks, pad, torch.float64)


def stationary_gaussian_sample(psd: Tensor, length: int, generator: torch.Generator | None, pad: int = 2048) -> Tensor:
    r"""A draw ``(S, length)`` of independent stationary Gaussian stems with power spectra ``psd (S, bins)``.

    White noise of ``length + 2 pad`` samples is coloured by ``\sqrt{P_k(f)}`` on its rfft grid (a circular
    filter) and the middle ``length`` samples are kept: their covariance is the circular one of the longer
    period, which is close to the stationary (non-periodic) covariance at every lag within the result when ``pad``
    exceeds the filters' effective length. Drawn on the CPU with ``generator``, returned in float64 on
    ``psd``'s device."""
    total = length + 2 * max(pad, 0)
    white = torch.randn(psd.shape[0], total, generator=generator, dtype=torch.float64)
    power = psd.detach().cpu().double()
    coloured = filter_by_gain(white, lambda n: psd_on_rfft_grid(power, n).sqrt(), 0, torch.float64)  # circular
    start = (total - length) // 2
    return coloured[:, start : start + length].to(psd.device)


def wiener_posterior_sample(mix: Tensor, psd: Tensor, generator: torch.Generator | None, pad: int = 2048) -> Tensor:
    r"""A draw ``(S, T)`` from the posterior of the stems given their sum under independent stationary Gaussian
    priors (the posterior sample that :func:`wiener_separation` is the mean of), by Matheron's rule:

    .. math:: s = z + \mathbb E[s \mid \textstyle\sum_k s_k = m - \sum_k z_k], \qquad z \sim p(s)

    (per frequency the posterior covariance is ``diag(P) - P P^T / sum_j P_j``). The draw sums to ``mix`` like
    the mean does; when the stems do follow the model its expected error power is twice the mean's (error of the
    mean plus an independent posterior draw). It is the fair learning-free reference for a sampler that returns
    one posterior sample, as :func:`wiener_separation` is for a posterior mean. With ``pad = 0`` every filter is
    circular and the draw is exact for the circular stationary model of the chunk; with ``pad > 0`` (a cropped
    longer circular draw and a reflect-padded mean) it is exact up to effects within ``pad``-or-so samples of the
    ends. Returned in ``mix``'s dtype."""
    z = stationary_gaussian_sample(psd, mix.shape[-1], generator, pad).to(mix.device)
    return (z + wiener_separation(mix.double() - z.sum(0), psd, pad)).to(mix.dtype)
