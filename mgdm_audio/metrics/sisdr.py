r"""SI-SDRi of the Slakh2100 separation benchmark (MSDM protocol, reused by MGDM), plus oracle baselines.

Scale-invariant ratio, as the reference code computes it (no mean removal, ``eps = 1e-8``), for an
estimate ``p`` of a reference ``o`` over the last dimension:

.. math:: \alpha = \frac{\langle p, o\rangle + \epsilon}{\|o\|^2 + \epsilon}, \qquad
          \mathrm{SISNR}(p, o) = 10 \log_{10} \frac{\|\alpha o\|^2 + \epsilon}{\|\alpha o - p\|^2 + \epsilon}

Protocol (MSDM ``evaluation``, MGDM ``sound_model/metrics.py``) on stems ``(S, T)``:

* Windows of ``window_s = 4.0`` s with ``hop_s = 2.0`` s (overlap ``window_s - hop_s``). With
  ``W = int(window_s * sr)``, ``O = int((window_s - hop_s) * sr)`` and ``H = W - O`` (the reference's integer
  arithmetic) there are ``ceil((T - O) / H)`` windows ``[i H, min(i H + W, T))``; the last one may be short.
  For 262,144 samples at 22,050 Hz: 5 windows, the last ``[176400, 262144)``.
* ``is_silent(s)`` iff ``||s||_2 / N < 1.5e-5`` (``N`` = the window's own length). A window is skipped when at
  most one *reference* stem is non-silent.
* In a kept window, per stem ``k``: ``SI-SDRi_k = SISNR(est_k, ref_k) - SISNR(mix, ref_k)`` with
  ``mix = sum_j ref_j`` (the sum of the reference stems, not of the estimates).
* Per stem, the score is the plain mean over kept windows (NaN if none). Over a test set the reference pools the
  kept windows of all tracks before averaging; use ``SISDRiResult.per_window`` for that.

Two variants are returned:

* ``msdm`` (the published protocol): a stem that is silent (even all-zero) inside a kept window is still scored.
  For an all-zero reference the improvement is ``10 log10((||mix||^2 + eps) / (||est||^2 + eps))``, which can be
  very large (and dominates means).
* ``exclude_silent``: a stem's own silent windows are dropped for that stem only (the window filter is unchanged).

Oracle baselines (same chunks): the ideal ratio mask, the ideal binary mask (both from the true stems' STFTs,
applied to the mixture STFT), and the mixture floor ``estimate_k = mix`` (SI-SDRi exactly 0 by construction).
All computations run in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

EPS = 1e-8
SILENCE_THRESHOLD = 1.5e-5


def si_snr(estimate: Tensor, reference: Tensor, eps: float = EPS) -> Tensor:
    """Scale-invariant ratio in dB over the last dimension (broadcast over the others), float64."""
    p, o = estimate.double(), reference.double()
    alpha = ((p * o).sum(-1, keepdim=True) + eps) / ((o * o).sum(-1, keepdim=True) + eps)
    target = alpha * o
    s_target = (target * target).sum(-1) + eps
    s_error = ((target - p) ** 2).sum(-1) + eps
    return 10.0 * torch.log10(s_target / s_error)


def is_silent(signal: Tensor, threshold: float = SILENCE_THRESHOLD) -> Tensor:
    """``||s||_2 / N < threshold`` over the last dimension (``N`` its length); a bool tensor."""
    s = signal.double()
    return torch.linalg.vector_norm(s, ord=2, dim=-1) / s.shape[-1] < threshold


def window_lengths(sample_rate: int, window_s: float = 4.0, hop_s: float = 2.0) -> tuple[int, int, int]:
    """``(window, overlap, hop)`` in samples, with the reference's truncation: ``int(window_s * sr)``,
    ``int((window_s - hop_s) * sr)`` and ``hop = window - overlap``."""
    window = int(window_s * sample_rate)
    overlap = int((window_s - hop_s) * sample_rate)
    hop = window - overlap
    if window <= 0 or hop <= 0 or overlap < 0:
        raise ValueError(f"need 0 < hop_s <= window_s with a positive sample count, got {window_s=}, {hop_s=}.")
    return window, overlap, hop


def windows(n_samples: int, sample_rate: int, window_s: float = 4.0, hop_s: float = 2.0) -> list[tuple[int, int]]:
    """The protocol's ``(start, stop)`` windows over ``n_samples``: ``ceil((N - overlap) / hop)`` of them.

    Edge cases (all follow the reference formula): the last window is truncated at ``N``; it always reaches
    past the end of the previous one (its start is ``< N - overlap``). If ``overlap < N <= window`` there is one
    window ``(0, N)``. If ``N <= overlap`` (e.g. ``N <= 2 s`` for the 4 s / 2 s setting) there are **no** windows,
    so every stem scores NaN.
    """
    window, overlap, hop = window_lengths(sample_rate, window_s, hop_s)
    count = max(0, math.ceil((n_samples - overlap) / hop))
    return [(i * hop, min(i * hop + window, n_samples)) for i in range(count)]


@dataclass
class SISDRiResult:
    """Per-stem SI-SDRi of one track (or chunk) under the two protocol variants.

    ``msdm``: mean over kept windows, silent stems included (the published protocol), ``(S,)``.
    ``exclude_silent``: mean over the kept windows where the stem itself is non-silent, ``(S,)``.
    ``n_kept``: kept windows per stem for ``msdm`` (the same for every stem), ``(S,)`` int64.
    ``n_kept_exclude_silent``: windows counted per stem for ``exclude_silent``, ``(S,)`` int64.
    ``per_window``: SI-SDRi of each kept window, ``(K, S)`` float64 (pool these across tracks).
    ``active``: ``(K, S)`` bool, whether the reference stem is non-silent in that kept window.
    ``kept``: the ``(start, stop)`` of the ``K`` kept windows.
    Means are NaN where no window counts, as in the reference (mean of an empty list).
    """

    msdm: Tensor
    exclude_silent: Tensor
    n_kept: Tensor
    n_kept_exclude_silent: Tensor
    per_window: Tensor
    active: Tensor
    kept: list[tuple[int, int]]


def si_sdri_windows(
    estimates: Tensor,
    references: Tensor,
    sample_rate: int,
    window_s: float = 4.0,
    hop_s: float = 2.0,
    eps: float = EPS,
    silence_threshold: float = SILENCE_THRESHOLD,
    filter_single_source: bool = True,
) -> SISDRiResult:
    """Windowed SI-SDRi of ``estimates (S, T)`` against ``references (S, T)`` (mono stems, same length).

    ``filter_single_source=True`` is the protocol (skip windows with at most one non-silent reference stem).
    """
    if estimates.shape != references.shape or references.dim() != 2:
        raise ValueError(
            f"expected estimates and references of the same shape (S, T), got "
            f"{tuple(estimates.shape)} and {tuple(references.shape)}."
        )
    est, ref = estimates.double(), references.double()
    mix = ref.sum(0)
    n_stems = ref.shape[0]
    values, active, kept = [], [], []
    for start, stop in windows(ref.shape[-1], sample_rate, window_s, hop_s):
        o = ref[:, start:stop]
        act = ~is_silent(o, silence_threshold)
        if filter_single_source and int(act.sum()) <= 1:
            continue
        m = mix[start:stop].expand_as(o)
        values.append(si_snr(est[:, start:stop], o, eps) - si_snr(m, o, eps))
        active.append(act)
        kept.append((start, stop))
    if kept:
        per_window, act_t = torch.stack(values), torch.stack(active)
    else:
        per_window = torch.empty(0, n_stems, dtype=torch.float64)
        act_t = torch.empty(0, n_stems, dtype=torch.bool)
    n_kept = torch.full((n_stems,), len(kept), dtype=torch.int64)
    n_active = act_t.sum(0).to(torch.int64)
    nan = torch.full((n_stems,), math.nan, dtype=torch.float64)
    msdm = per_window.mean(0) if kept else nan
    masked_sum = torch.where(act_t, per_window, torch.zeros_like(per_window)).sum(0)
    exclude = torch.where(n_active > 0, masked_sum / n_active.clamp(min=1), nan)
    return SISDRiResult(msdm, exclude, n_kept, n_active, per_window, act_t, kept)


def mixture_baseline(references: Tensor) -> Tensor:
    """The floor: every stem's estimate is the mixture ``sum_j ref_j``; ``(S, T)``, SI-SDRi exactly 0."""
    return references.sum(0, keepdim=True).expand_as(references).clone()


def _stft(x: Tensor, n_fft: int, hop: int) -> Tensor:
    window = torch.hann_window(n_fft, dtype=torch.float64, device=x.device)
    return torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="constant", return_complex=True)


def _masked_estimates(references: Tensor, masks: Tensor, mix_spec: Tensor, n_fft: int, hop: int) -> Tensor:
    window = torch.hann_window(n_fft, dtype=torch.float64, device=references.device)
    est = torch.istft(masks * mix_spec, n_fft, hop, window=window, center=True, length=references.shape[-1])
    return est.to(references.dtype)


def ideal_ratio_mask(references: Tensor, n_fft: int = 2048, hop: int = 512, power: float = 1.0) -> Tensor:
    """Oracle IRM separation of ``mix = sum_k ref_k`` from the true stems ``references (S, T)`` -> ``(S, T)``.

    ``M_k = |S_k|^power / sum_j |S_j|^power`` (``power = 1``: magnitude ratio, the default here; ``power = 2``
    gives the Wiener-like power ratio), applied to the mixture STFT (Hann window, centred, ``n_fft``/``hop``) and
    inverted to length ``T``. Bins where every stem is zero get ``1/S``, so the masks always sum to 1 and the
    estimates sum back to the mixture up to the STFT round trip.
    """
    ref = references.double()
    spec = _stft(ref, n_fft, hop)
    mag = spec.abs() ** power
    total = mag.sum(0, keepdim=True)
    masks = torch.where(total > 0, mag / total.clamp(min=torch.finfo(torch.float64).tiny), 1.0 / ref.shape[0])
    return _masked_estimates(references, masks, spec.sum(0), n_fft, hop)


def ideal_binary_mask(references: Tensor, n_fft: int = 2048, hop: int = 512) -> Tensor:
    """Oracle IBM: ``M_k = 1`` in the bins where stem ``k`` has the largest magnitude (ties: the lowest index),
    else 0; applied to the mixture STFT and inverted to length ``T``. The masks sum to 1 in every bin."""
    ref = references.double()
    spec = _stft(ref, n_fft, hop)
    winner = spec.abs().argmax(0, keepdim=True)
    masks = torch.zeros_like(spec.real).scatter_(0, winner, 1.0)
    return _masked_estimates(references, masks, spec.sum(0), n_fft, hop)
