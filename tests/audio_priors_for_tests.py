"""A toy multi-stem prior with a known answer: independent Gaussian stems in disjoint frequency bands.

Each stem ``s`` of a chunk is a zero-mean circulant Gaussian whose power spectrum is ``power`` inside its band
``[lo_s, hi_s)`` Hz and ``floor`` outside, so the exact denoiser is a per-bin Wiener filter,
``D(x, sigma)_s = irfft(rfft(x_s) P_s / (P_s + sigma^2 T))`` (rfft without normalisation: a white signal of
variance ``v`` has ``E|X_k|^2 = v T``). The posterior of the stems given their sum is, up to the floor, the
band-split of the mixture, so a separator using it must recover band-limited stems.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from mgdm_audio.core.schedules import NoiseLevels

BANDS = ((0.0, 400.0), (600.0, 1400.0), (1600.0, 2600.0), (2800.0, 4000.0))


class BandPrior:
    def __init__(self, sample_rate: int = 8000, chunk_samples: int = 512, power: float = 0.01, floor: float = 1e-8):
        self.sample_rate, self.chunk_samples = sample_rate, chunk_samples
        self.power, self.floor = power, floor
        self.stems = ("bass", "drums", "guitar", "piano")
        self.config = {"name": "band-toy", "metadata": {"mix_rms": 0.1}}
        self.weights_sha256 = "0" * 64
        self.path = Path("band-toy")
        self.downsampling = 8
        self.levels = NoiseLevels.karras(5e-4, 20.0, 3.0, 1000)
        self.calls = 0

    def to(self, device):
        return self

    def spectrum(self, length: int) -> Tensor:
        freqs = torch.fft.rfftfreq(length, 1.0 / self.sample_rate).double()
        p = torch.full((len(self.stems), freqs.numel()), self.floor, dtype=torch.float64)
        for s, (lo, hi) in enumerate(BANDS):
            p[s, (freqs >= lo) & (freqs < hi)] = self.power
        return p

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        self.calls += 1
        t = x.shape[-1]
        sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1)
        p = self.spectrum(t)[None]
        gain = p / (p + sig**2)
        return torch.fft.irfft(torch.fft.rfft(x.double(), dim=-1) * gain, n=t, dim=-1).to(x.dtype)


def band_stems(length: int, sample_rate: int = 8000, seed: int = 0) -> Tensor:
    """Test stems ``(4, length)``: a few random tones inside each band (away from the band edges)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / sample_rate
    stems = torch.zeros(len(BANDS), length, dtype=torch.float64)
    for s, (lo, hi) in enumerate(BANDS):
        for _ in range(3):
            f = lo + 50 + (hi - lo - 100) * float(torch.rand(1, generator=g))
            phase = 2 * torch.pi * float(torch.rand(1, generator=g))
            stems[s] += 0.05 * torch.sin(2 * torch.pi * f * t + phase)
    return stems.float()
