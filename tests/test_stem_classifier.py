"""The prior report's pieces in the package: stem classifier, signal statistics, baseline denoisers, seeded chunks
(no trained prior)."""

from __future__ import annotations

import math

import pytest
import torch

from mgdm_audio.audio import baselines
from mgdm_audio.audio.data.readers import seeded_chunks
from mgdm_audio.audio.model import build_prior
from mgdm_audio.metrics import signal_stats
from mgdm_audio.metrics import stem_classifier as sc

SR = 22050
STEMS = ["bass", "drums", "guitar", "piano"]


def _toy_stems(n: int, seed: int, length: int = 8192) -> torch.Tensor:
    """``(n, 4, length)`` chunks with four distinguishable 'instruments' at random gains.

    0: low sine (60-120 Hz); 1: noise bursts; 2: mid sawtooth-ish harmonics (300-600 Hz); 3: high sine (1.5-3 kHz).
    """
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / SR
    out = torch.zeros(n, 4, length)
    for i in range(n):
        f = 60 + 60 * torch.rand(1, generator=g)
        out[i, 0] = torch.sin(2 * math.pi * f * t)
        envelope = (torch.sin(2 * math.pi * 4 * t) > 0.7).float()
        out[i, 1] = envelope * torch.randn(length, generator=g)
        f = 300 + 300 * torch.rand(1, generator=g)
        out[i, 2] = sum(torch.sin(2 * math.pi * k * f * t) / k for k in range(1, 6))
        f = 1500 + 1500 * torch.rand(1, generator=g)
        out[i, 3] = torch.sin(2 * math.pi * f * t)
        out[i] *= 10 ** (-(10 + 30 * torch.rand(4, 1, generator=g)) / 20)  # -10 to -40 dBFS-ish gains
    return out


def test_log_mel_matches_the_htk_filterbank_on_a_torch_stft() -> None:
    # the mel power spectrogram is librosa's; written out: triangles on the HTK mel scale from 0 Hz to Nyquist (each
    # peaking at 1) applied to a centred, reflect-padded Hann STFT (1024 / 256)
    freqs = torch.linspace(0.0, SR / 2, 513, dtype=torch.float64)
    top = 2595.0 * math.log10(1.0 + (SR / 2) / 700.0)
    edges = 700.0 * (10 ** (torch.linspace(0.0, top, 66, dtype=torch.float64) / 2595.0) - 1.0)
    rising = (freqs - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    falling = (edges[2:, None] - freqs) / (edges[2:, None] - edges[1:-1, None])
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0).float()
    x = 0.1 * torch.randn(3, 16384, generator=torch.Generator().manual_seed(0))
    spec = torch.stft(x, 1024, 256, window=torch.hann_window(1024), center=True, return_complex=True).abs().pow(2)
    want = torch.log10(torch.einsum("mf,nft->nmt", bank, spec) + 1e-10)
    torch.testing.assert_close(sc.log_mel(x, SR), want, atol=1e-5, rtol=0)


def test_log_mel_of_a_sine_peaks_at_its_band_and_features_are_gain_invariant() -> None:
    t = torch.arange(8192) / SR
    low, high = torch.sin(2 * math.pi * 100 * t), torch.sin(2 * math.pi * 4000 * t)
    mel = sc.log_mel(torch.stack([low, high]), SR)
    assert mel.shape[:2] == (2, 64)
    assert mel[0].mean(-1).argmax() < mel[1].mean(-1).argmax()
    x = torch.stack([low, high])
    torch.testing.assert_close(sc.stem_features(x, SR), sc.stem_features(0.01 * x, SR), atol=2e-2, rtol=0)


def test_rms_db_and_silence() -> None:
    x = torch.stack([torch.full((100,), 0.1), torch.zeros(100), torch.full((100,), 1e-4)])
    torch.testing.assert_close(sc.rms_db(x), torch.tensor([-20.0, -200.0, -80.0]))


def test_logistic_regression_separates_toy_instruments_and_accuracy_counts_silence_as_error() -> None:
    train_chunks, test_chunks = _toy_stems(12, seed=0), _toy_stems(6, seed=1)
    stems, labels, active = sc.labelled_stems(train_chunks, -60.0)
    assert active.all() and labels.tolist()[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    classifier = sc.fit_logistic_regression(sc.stem_features(stems, SR), labels, 4, steps=200)
    real = sc.stem_accuracy(classifier, test_chunks, STEMS, SR, -60.0, count_silent_as_errors=False)
    assert real["accuracy"] == 1.0 and real["scored"] == 24
    # permuted channels: every stem claims the wrong instrument; a silenced channel is an error when scored
    shuffled = test_chunks[:, [1, 2, 3, 0]].clone()
    assert sc.stem_accuracy(classifier, shuffled, STEMS, SR, -60.0, True)["accuracy"] == 0.0
    partly_silent = test_chunks.clone()
    partly_silent[:3, 2] = 0.0
    scored = sc.stem_accuracy(classifier, partly_silent, STEMS, SR, -60.0, count_silent_as_errors=True)
    assert scored["correct"] == 21 and scored["scored"] == 24 and scored["silent_fraction"] == pytest.approx(3 / 24)
    assert scored["per_stem"]["guitar"] == pytest.approx(
        {
            "correct": 3,
            "scored": 6,
            "silent": 3,
            "accuracy": 0.5,
            "median_rms_db": scored["per_stem"]["guitar"]["median_rms_db"],
        }
    )
    skipped = sc.stem_accuracy(classifier, partly_silent, STEMS, SR, -60.0, count_silent_as_errors=False)
    assert skipped["accuracy"] == 1.0 and skipped["scored"] == 21


def test_baseline_denoisers_and_band_losses_of_a_tiny_prior() -> None:
    torch.manual_seed(0)
    prior = build_prior("tiny", edm={"sigma_data": 0.2, "clamp_output": False}).eval()
    x0 = 0.2 * torch.randn(8, 4, 128, generator=torch.Generator().manual_seed(3))
    sigma = torch.full((8,), 0.5)
    assert torch.equal(baselines.SilenceDenoiser(prior)(x0, sigma), torch.zeros_like(x0))
    # a fresh prior's network output is zero-initialised: the prior IS the skip path
    torch.testing.assert_close(baselines.SkipPathDenoiser(prior)(x0, sigma), prior(x0, sigma))
    white_train = 0.2 * torch.randn(32, 4, 128, generator=torch.Generator().manual_seed(4))
    bands = baselines.denoising_bands(prior, x0, batch_size=4, train_chunks=white_train)
    assert set(bands) == {"prior", "silence D=0", "skip path D=c_skip x", baselines.WIENER}
    # white data: the fitted Wiener filter is (about) the scalar c_skip
    for band, value in bands[baselines.WIENER].items():
        assert value == pytest.approx(bands["skip path D=c_skip x"][band], rel=0.15)
    for band, value in bands["prior"].items():
        assert value == pytest.approx(bands["skip path D=c_skip x"][band], rel=1e-5)
    # data RMS = sigma_data: the skip path scores about 1 in every band (EDM's unit-variance target)
    assert all(0.8 < v < 1.2 for v in bands["skip path D=c_skip x"].values())
    # silence scores lambda(sigma) rms^2 = (sigma^2 + d^2) / sigma^2: huge at small sigma, about 1 at large
    assert bands["silence D=0"]["ln_sigma[-7,-5)"] > 1e3 and bands["silence D=0"]["ln_sigma[-1,3)"] < 3


def test_seeded_chunks_are_reproducible() -> None:
    data = torch.arange(40.0).reshape(10, 1, 4)
    a, b = seeded_chunks(data, 4, seed=7), seeded_chunks(data, 4, seed=7)
    assert torch.equal(a, b) and a.shape == (4, 1, 4)
    assert not torch.equal(a, seeded_chunks(data, 4, seed=8))
    firsts = a[:, 0, 0].tolist()
    assert firsts == sorted(firsts)


def test_high_band_fraction_of_sines_and_white_noise() -> None:
    t = torch.arange(8192) / SR
    low = torch.sin(2 * torch.pi * 441.0 * t)  # far below a quarter of Nyquist
    high = torch.sin(2 * torch.pi * 0.4 * SR * t)  # above it
    noise = torch.randn(64, 8192, generator=torch.Generator().manual_seed(0))
    fractions = signal_stats.high_band_fraction(torch.stack([low, high]))
    assert fractions[0] < 1e-3 and fractions[1] > 0.999
    assert abs(float(signal_stats.high_band_fraction(noise).mean()) - 0.75) < 0.01
    pair, swapped = torch.stack([low, high])[None], torch.stack([high, low])[None]
    balance = signal_stats.spectral_balance(pair, swapped, ["a", "b"], SR)
    assert balance["cutoff_hz"] == SR / 8
    assert balance["per_stem"]["a"]["generated"] < 1e-3 and balance["per_stem"]["a"]["real"] > 0.999


def test_envelope_variation_of_tones_noise_and_hits() -> None:
    t = torch.arange(8192) / SR
    tone = torch.sin(2 * torch.pi * 441.0 * t)  # 441 Hz at SR: whole periods in every 512-sample frame
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(64, 8192, generator=g)
    hits = noise.clone().reshape(64, 16, 512)
    hits[:, 1::4] = 0  # silence in a quarter of the frames
    hits[:, 2::4] *= 0.1
    hits = hits.reshape(64, 8192)
    assert float(signal_stats.envelope_variation(tone)) < 0.01
    assert abs(float(signal_stats.envelope_variation(noise).median()) - 1 / math.sqrt(2 * 512)) < 0.01
    assert float(signal_stats.envelope_variation(hits).median()) > 0.5
    d = signal_stats.dynamics(torch.stack([tone, hits[0]])[None], torch.stack([hits[0], tone])[None], ["a", "b"])
    assert d["frame"] == 512
    assert d["per_stem"]["a"]["generated"] < 0.01 and d["per_stem"]["a"]["real"] > 0.5
