"""Helpers of evaluation/prior/report.py: features, classifier, accuracy bookkeeping, baselines (no trained prior)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from mgdm_audio.audio.model import build_prior

ROOT = Path(__file__).resolve().parents[1]
SR = 22050
STEMS = ["bass", "drums", "guitar", "piano"]


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prior_report", ROOT / "evaluation/prior/report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["prior_report"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


report = _report()


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


def test_mel_filterbank_covers_the_spectrum_and_peaks_in_order() -> None:
    bank = report.mel_filterbank(SR, 1024, 64)
    assert bank.shape == (64, 513) and bank.min() >= 0 and bank.max() <= 1 + 1e-6
    peaks = bank.argmax(dim=1)
    assert torch.all(peaks[1:] >= peaks[:-1]) and peaks[-1] > 400
    assert (bank.sum(dim=0)[5:-5] > 0).all()  # no hole between the first and last filters


def test_log_mel_of_a_sine_peaks_at_its_band_and_features_are_gain_invariant() -> None:
    t = torch.arange(8192) / SR
    low, high = torch.sin(2 * math.pi * 100 * t), torch.sin(2 * math.pi * 4000 * t)
    mel = report.log_mel(torch.stack([low, high]), SR)
    assert mel.shape[:2] == (2, 64)
    assert mel[0].mean(-1).argmax() < mel[1].mean(-1).argmax()
    x = torch.stack([low, high])
    torch.testing.assert_close(report.stem_features(x, SR), report.stem_features(0.01 * x, SR), atol=2e-2, rtol=0)


def test_rms_db_and_silence() -> None:
    x = torch.stack([torch.full((100,), 0.1), torch.zeros(100), torch.full((100,), 1e-4)])
    torch.testing.assert_close(report.rms_db(x), torch.tensor([-20.0, -200.0, -80.0]))


def test_logistic_regression_separates_toy_instruments_and_accuracy_counts_silence_as_error() -> None:
    train_chunks, test_chunks = _toy_stems(12, seed=0), _toy_stems(6, seed=1)
    stems, labels, active = report.labelled_stems(train_chunks, -60.0)
    assert active.all() and labels.tolist()[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    classifier = report.fit_logistic_regression(report.stem_features(stems, SR), labels, 4, steps=200)
    real = report.stem_accuracy(classifier, test_chunks, STEMS, SR, -60.0, count_silent_as_errors=False)
    assert real["accuracy"] == 1.0 and real["scored"] == 24
    # permuted channels: every stem claims the wrong instrument; a silenced channel is an error when scored
    shuffled = test_chunks[:, [1, 2, 3, 0]].clone()
    assert report.stem_accuracy(classifier, shuffled, STEMS, SR, -60.0, True)["accuracy"] == 0.0
    partly_silent = test_chunks.clone()
    partly_silent[:3, 2] = 0.0
    scored = report.stem_accuracy(classifier, partly_silent, STEMS, SR, -60.0, count_silent_as_errors=True)
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
    skipped = report.stem_accuracy(classifier, partly_silent, STEMS, SR, -60.0, count_silent_as_errors=False)
    assert skipped["accuracy"] == 1.0 and skipped["scored"] == 21


def test_baseline_denoisers_and_band_losses_of_a_tiny_prior() -> None:
    torch.manual_seed(0)
    prior = build_prior("tiny", edm={"sigma_data": 0.2, "clamp_output": False}).eval()
    x0 = 0.2 * torch.randn(8, 4, 128, generator=torch.Generator().manual_seed(3))
    sigma = torch.full((8,), 0.5)
    assert torch.equal(report.SilenceDenoiser(prior)(x0, sigma), torch.zeros_like(x0))
    # a fresh prior's network output is zero-initialised: the prior IS the skip path
    torch.testing.assert_close(report.SkipPathDenoiser(prior)(x0, sigma), prior(x0, sigma))
    white_train = 0.2 * torch.randn(32, 4, 128, generator=torch.Generator().manual_seed(4))
    bands = report.denoising_bands(prior, x0, batch_size=4, train_chunks=white_train)
    assert set(bands) == {"prior", "silence D=0", "skip path D=c_skip x", report.WIENER}
    # white data: the fitted Wiener filter is (about) the scalar c_skip
    for band, value in bands[report.WIENER].items():
        assert value == pytest.approx(bands["skip path D=c_skip x"][band], rel=0.15)
    for band, value in bands["prior"].items():
        assert value == pytest.approx(bands["skip path D=c_skip x"][band], rel=1e-5)
    # data RMS = sigma_data: the skip path scores about 1 in every band (EDM's unit-variance target)
    assert all(0.8 < v < 1.2 for v in bands["skip path D=c_skip x"].values())
    # silence scores lambda(sigma) rms^2 = (sigma^2 + d^2) / sigma^2: huge at small sigma, about 1 at large
    assert bands["silence D=0"]["ln_sigma[-7,-5)"] > 1e3 and bands["silence D=0"]["ln_sigma[-1,3)"] < 3


def test_seeded_chunks_are_reproducible() -> None:
    data = torch.arange(40.0).reshape(10, 1, 4)
    a, b = report.seeded_chunks(data, 4, seed=7), report.seeded_chunks(data, 4, seed=7)
    assert torch.equal(a, b) and a.shape == (4, 1, 4)
    assert not torch.equal(a, report.seeded_chunks(data, 4, seed=8))
    firsts = a[:, 0, 0].tolist()
    assert firsts == sorted(firsts)


def test_high_band_fraction_of_sines_and_white_noise() -> None:
    t = torch.arange(8192) / SR
    low = torch.sin(2 * torch.pi * 441.0 * t)  # far below a quarter of Nyquist
    high = torch.sin(2 * torch.pi * 0.4 * SR * t)  # above it
    noise = torch.randn(64, 8192, generator=torch.Generator().manual_seed(0))
    fractions = report.high_band_fraction(torch.stack([low, high]))
    assert fractions[0] < 1e-3 and fractions[1] > 0.999
    assert abs(float(report.high_band_fraction(noise).mean()) - 0.75) < 0.01
    balance = report.spectral_balance(torch.stack([low, high])[None], torch.stack([high, low])[None], ["a", "b"], SR)
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
    assert float(report.envelope_variation(tone)) < 0.01
    assert abs(float(report.envelope_variation(noise).median()) - 1 / math.sqrt(2 * 512)) < 0.01
    assert float(report.envelope_variation(hits).median()) > 0.5
    d = report.dynamics(torch.stack([tone, hits[0]])[None], torch.stack([hits[0], tone])[None], ["a", "b"])
    assert d["frame"] == 512
    assert d["per_stem"]["a"]["generated"] < 0.01 and d["per_stem"]["a"]["real"] > 0.5
