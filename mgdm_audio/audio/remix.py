r"""Stems at the input's channels and rate: ratio masks from the prior's stems applied to every input channel.

The prior separates one channel (the mid) at its own rate ``r_p``. To return stems at the input's rate ``r`` on every
input channel ``c``, the prior's stems are resampled to ``r`` and turned into ratio masks on the short-time Fourier
transform (STFT) grid of the input (a Wiener-style filter, as in Liutkus & Badeau's generalised Wiener filtering):

.. math::
    M_s(f, n) = \frac{|\hat S_s(f, n)|^p}{\sum_r |\hat S_r(f, n)|^p}, \qquad
    \hat X_{s,c} = \mathrm{iSTFT}\big(M_s \cdot X_c\big),

with ``X_c`` the STFT of channel ``c`` and ``p = 2`` (power ratio; ``p = 1`` is the amplitude ratio). Because
``sum_s M_s = 1`` in every bin, ``sum_s \hat X_{s,c} = iSTFT(STFT(x_c)) = x_c`` up to rounding; the rounding residual
``x_c - sum_s \hat X_{s,c}`` is then added to the stems in equal shares (``1 / S`` each), so the stems sum to each
input channel exactly (in float64, before the output is cast).

**Above the prior's band** (``f > cutoff = 0.9 r_p / 2``; the resampled stems hold no reliable energy there)
every bin of a frame takes that frame's *top-band* mask: the power ratio of the stems over ``[0.6, 0.9] r_p / 2``.
Content above the prior's band (cymbals, the upper partials of piano and guitar, breath and pick noise) belongs to
the instruments active at the top of the band at the same moment, so the frame's top-band shares are the best guess
the prior offers. Bins where every stem is silent give each stem ``1 / S``.

**Streaming.** STFT frames lie on a fixed grid of absolute positions ``p_j = (j - 3) h`` (window ``N = 4 h``, periodic
Hann analysis and synthesis windows, whose squared sum over frames is the constant ``3 / 2`` at that hop), so an output
span ``[e, e + m)`` depends only on the inputs over ``[e - 3h, e + m + 3h)``. :class:`ChannelMapper` keeps those
samples, and its output equals the whole-signal computation whatever the block sizes (tested).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

TOP_BAND = (0.6, 0.9)
"""The prior's top band, as fractions of its Nyquist frequency; above ``TOP_BAND[1]`` the top-band rule applies."""


def frame_size(sample_rate: int) -> int:
    """STFT window at ``sample_rate``: about 46 ms, a power of two (2048 at 44.1 and 48 kHz)."""
    return 2 ** max(8, round(math.log2(0.0464 * sample_rate)))


class ChannelMapper:
    """Streaming mask mapping of ``K`` sets of ``S`` stems (at rate ``sample_rate``) onto ``C`` mixture channels.

    Feed the mixture with :meth:`push_mix` (``(C, n)`` blocks) and the stems with :meth:`push_stems` (``(K, S, n)``
    blocks, already at ``sample_rate``); :meth:`pull` returns the finished output ``(K, S, C, m)`` (possibly
    ``m = 0``), and :meth:`finish` the rest once the total length is known.
    """

    def __init__(
        self, n_stems: int, channels: int, sample_rate: int, prior_rate: int, exponent: float = 2.0, span: int = 64
    ) -> None:
        self.n_stems, self.channels, self.exponent = int(n_stems), int(channels), float(exponent)
        self.n_fft = frame_size(sample_rate)
        self.hop = self.n_fft // 4
        self.span = span * self.hop  # samples emitted per STFT block
        self.window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
        freqs = torch.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)
        nyquist = prior_rate / 2
        self.high = freqs > TOP_BAND[1] * nyquist if sample_rate > prior_rate else torch.zeros_like(freqs, dtype=bool)
        self.top = (freqs >= TOP_BAND[0] * nyquist) & (freqs <= TOP_BAND[1] * nyquist)
        self.mix = torch.zeros(self.channels, 0, dtype=torch.float64)
        self.stems: Tensor | None = None
        self.start = -3 * self.hop  # absolute position of the buffers' first sample (zeros before 0)
        self.emitted = 0

    def push_mix(self, block: Tensor) -> None:
        if self.mix.shape[-1] == 0 and self.start < 0:
            self.mix = torch.zeros(self.channels, -self.start, dtype=torch.float64)
        self.mix = torch.cat([self.mix, block.to(torch.float64)], -1)

    def push_stems(self, block: Tensor) -> None:
        block = block.to(torch.float64)
        if self.stems is None:
            pad = block.new_zeros(*block.shape[:-1], -self.start)
            self.stems = pad
        self.stems = torch.cat([self.stems, block], -1)

    def _available(self) -> int:
        """Absolute end of the samples both buffers hold."""
        if self.stems is None:
            return 0
        return self.start + min(self.mix.shape[-1], self.stems.shape[-1])

    def pull(self) -> Tensor:
        """Every span whose inputs are all present."""
        out = []
        while self._available() >= self.emitted + self.span + 3 * self.hop:
            out.append(self._emit(self.span))
        return self._cat(out)

    def finish(self, total: int) -> Tensor:
        """The output up to ``total`` samples (the mixture's length; inputs past the pushed data count as zeros)."""
        out = [self.pull()]
        while self.emitted < total:
            start = self.emitted
            out.append(
                self._emit(min(self.span, self.hop * math.ceil((total - start) / self.hop)))[..., : total - start]
            )
        return self._cat(out)

    def _cat(self, parts: list[Tensor]) -> Tensor:
        parts = [p for p in parts if p.numel()]
        if not parts:
            k = 0 if self.stems is None else self.stems.shape[0]
            return torch.zeros(k, self.n_stems, self.channels, 0)
        return torch.cat(parts, -1)

    def _window(self, buf: Tensor, a: int, b: int) -> Tensor:
        """Samples ``[a, b)`` (absolute) of a buffer, zeros where it has none."""
        i, j = a - self.start, b - self.start
        have = buf[..., max(0, i) : min(j, buf.shape[-1])]
        return torch.nn.functional.pad(have, (max(0, -i), (j - i) - have.shape[-1] - max(0, -i)))

    def _emit(self, m: int) -> Tensor:
        """Output ``[emitted, emitted + m)`` (``m`` a multiple of the hop) as ``(K, S, C, m)`` float32."""
        h = self.hop
        e = self.emitted
        assert self.stems is not None
        a, b = e - 3 * h, e + m + 3 * h
        stems, mix = self._window(self.stems, a, b), self._window(self.mix, a, b)
        spec_s = self._stft(stems)  # (K, S, F, frames)
        spec_x = self._stft(mix)  # (C, F, frames)
        masks = self._masks(spec_s)  # (K, S, F, frames)
        out = self._istft(masks[:, :, None] * spec_x[None, None], b - a)[..., 3 * h : 3 * h + m]
        x = mix[..., 3 * h : 3 * h + m]
        out = out + (x - out.sum(1)).unsqueeze(1) / self.n_stems  # the rounding residual, shared equally
        self.emitted = e + m
        drop = self.emitted - 3 * h - self.start
        if drop > 0:
            self.mix, self.stems, self.start = self.mix[..., drop:], self.stems[..., drop:], self.start + drop
        return out.float()

    def _stft(self, x: Tensor) -> Tensor:
        frames = x.unfold(-1, self.n_fft, self.hop) * self.window  # (..., frames, N)
        return torch.fft.rfft(frames, dim=-1).transpose(-1, -2)  # (..., F, frames)

    def _istft(self, spec: Tensor, length: int) -> Tensor:
        frames = torch.fft.irfft(spec.transpose(-1, -2), n=self.n_fft, dim=-1) * self.window  # (..., frames, N)
        lead, count = frames.shape[:-2], frames.shape[-2]
        flat = frames.reshape(-1, count, self.n_fft).transpose(1, 2)  # (B, N, frames)
        out = torch.nn.functional.fold(flat, (1, length), (1, self.n_fft), stride=(1, self.hop))
        return out.reshape(*lead, length) / 1.5  # sum over frames of the squared periodic Hann at hop N / 4

    def _masks(self, spec: Tensor) -> Tensor:
        power = spec.abs().pow(self.exponent)  # (K, S, F, frames)
        total = power.sum(1, keepdim=True)
        masks = torch.where(total > 0, power / total.clamp_min(1e-300), torch.full_like(power, 1 / self.n_stems))
        if bool(self.high.any()):
            top = power[..., self.top, :].sum(-2, keepdim=True)  # (K, S, 1, frames)
            top_total = top.sum(1, keepdim=True)
            share = torch.where(
                top_total > 0, top / top_total.clamp_min(1e-300), torch.full_like(top, 1 / self.n_stems)
            )
            masks[..., self.high, :] = share.expand(-1, -1, int(self.high.sum()), -1)
        return masks


def map_to_input(
    stems: Iterable[Tensor], mapper: ChannelMapper, prior_rate: int, sample_rate: int, frames: int
) -> Iterator[tuple[Tensor, float]]:
    """Stream the prior's stems ``(K, S, n)`` blocks (at ``prior_rate``) through the mapper, whose mixture the caller
    pushes (at ``sample_rate``, ``frames`` samples in all); yields ``((K, S, C, m) blocks, seconds spent mapping)``."""
    from mgdm_audio.audio.io import resample_blocks

    k = s = 0

    def flat() -> Iterator[Tensor]:
        nonlocal k, s
        for block in stems:
            k, s = block.shape[0], block.shape[1]
            yield block.reshape(k * s, -1)

    for up in resample_blocks(flat(), prior_rate, sample_rate):
        tic = time.perf_counter()
        mapper.push_stems(up.reshape(k, s, -1))
        block = mapper.pull()
        seconds = time.perf_counter() - tic
        if block.shape[-1]:
            yield block, seconds
    tic = time.perf_counter()
    block = mapper.finish(frames)
    yield block, time.perf_counter() - tic


def map_stems(stems: Tensor, mix: Tensor, prior_rate: int, sample_rate: int, exponent: float = 2.0) -> Tensor:
    """Whole-signal form: stems ``(K, S, T)`` at ``sample_rate`` (already resampled) and the mixture ``(C, T)`` ->
    stems ``(K, S, C, T)`` that sum to every channel of the mixture."""
    mapper = ChannelMapper(stems.shape[1], mix.shape[0], sample_rate, prior_rate, exponent)
    mapper.push_mix(mix)
    mapper.push_stems(stems)
    return mapper.finish(mix.shape[-1])
