"""Mapping the prior's stems onto the input's channels and rate (audio/remix.py): exact sums, streaming equals the
whole signal, panned stems recovered per channel, and the rule above the prior's band."""

import math
import random

import torch

from mgdm_audio.audio.io import resample_blocks
from mgdm_audio.audio.remix import ChannelMapper, map_stems
from tests.audio_priors_for_tests import band_stems

RATE, PRIOR_RATE = 44100, 8000
PAN = torch.tensor([[0.9, 0.2, 0.6, 0.4], [0.1, 0.8, 0.4, 0.6]])  # (C, S) gains


def _resample(x: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    return torch.cat(list(resample_blocks([x], sr_in, sr_out)), -1)


def test_streaming_equals_the_whole_signal_and_sums_exactly():
    g = torch.Generator().manual_seed(0)
    t = RATE + 777
    stems, mix = 0.1 * torch.randn(2, 4, t, generator=g), 0.3 * torch.randn(2, t, generator=g)
    whole = map_stems(stems, mix, PRIOR_RATE, RATE)
    assert whole.shape == (2, 4, 2, t)
    assert float((whole.double().sum(1) - mix.double()).abs().max()) <= 1e-6 * float(mix.abs().max())
    mapper, parts, rng, i, j = ChannelMapper(4, 2, RATE, PRIOR_RATE), [], random.Random(0), 0, 0
    while i < t or j < t:
        n = rng.randint(1, 9000)
        mapper.push_mix(mix[:, i : i + n]) if i < t else None
        mapper.push_stems(stems[..., j : j + n // 2 + 1]) if j < t else None
        i, j = i + n, j + n // 2 + 1
        parts.append(mapper.pull())
    parts.append(mapper.finish(t))
    assert torch.equal(torch.cat(parts, -1), whole)


def test_panned_stems_come_back_on_each_channel():
    x = band_stems(RATE // 2, RATE, seed=1).float()  # (S, T), every stem below the prior's 4 kHz Nyquist
    refs = PAN[:, :, None] * x[None]  # (C, S, T)
    mix = refs.sum(1)
    prior_stems = _resample(refs.mean(0), RATE, PRIOR_RATE)  # the mid's stems, as the prior would give them
    up = _resample(prior_stems, PRIOR_RATE, RATE)[..., : x.shape[-1]]
    est = map_stems(up[None], mix, PRIOR_RATE, RATE)[0].transpose(0, 1)  # (C, S, T)
    inner = slice(2000, -2000)
    snr = 10 * torch.log10(refs[..., inner].pow(2).sum(-1) / (est - refs)[..., inner].pow(2).sum(-1))
    assert bool((snr > 20).all()), snr  # the mid alone would put each stem on both channels equally (<= 6 dB)


def test_the_band_above_the_prior_follows_the_top_band():
    t = RATE
    time = torch.arange(t) / RATE
    low = torch.zeros(4, t)
    low[0] = 0.3 * torch.sin(2 * math.pi * 200 * time)  # stem 0 below the top band
    low[2] = 0.1 * torch.sin(2 * math.pi * 3300 * time)  # stem 2 alone in the top band (2.4-3.6 kHz)
    high = 0.05 * torch.sin(2 * math.pi * 12000 * time)  # content the prior never sees
    mix = (low.sum(0) + high)[None]
    est = map_stems(low[None], mix, PRIOR_RATE, RATE)[0, :, 0]  # (S, T)
    spec = torch.fft.rfft(est[:, 4096:-4096], dim=-1).abs().pow(2)
    freqs = torch.fft.rfftfreq(t - 8192, 1 / RATE)
    band = (freqs > 11500) & (freqs < 12500)
    share = spec[:, band].sum(-1) / spec[:, band].sum()
    assert float(share[2]) > 0.99, share
