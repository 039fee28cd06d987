"""On-the-fly stem augmentation for prior training (Demucs-style), seeded, on numpy arrays ``(S, T)``.

Demucs (Défossez et al., "Music Source Separation in the Waveform Domain", 2019, §5.2; repository
facebookresearch/demucs, ``demucs/augment.py``) trains on stems with random per-stem gains, sign flips, channel
swaps, time shifts and stems remixed across tracks. Here, for mono stems (remixing is done by the reader, which
draws each stem's crop from its own track with probability ``remix``), each stem ``s_i`` independently gets:

1. a random EQ with probability ``eq``: a peaking filter (RBJ biquad, gain ~ U(-9, 9) dB, centre log-uniform in
   [80, 8000] Hz, Q ~ U(0.5, 2)), and with probability 1/3 a second-order Butterworth high-pass (30-250 Hz) or
   low-pass (2.5-9 kHz);
2. soft saturation with probability ``saturation``: ``p tanh(d s / p) / tanh(d)``, ``p = max |s|``, drive
   ``d ~ U(1, 3)``;
3. compression with probability ``compression``: a feed-forward compressor on the RMS envelope
   ``e = sqrt(LP(s^2))`` (one-pole, 10 ms), gain ``min(1, (e / theta)^(1/R - 1))`` with the threshold
   ``theta = rms(s) * U(0.7, 1.5)`` and ratio ``R ~ U(2, 6)``;
4. light reverb with probability ``reverb``: ``(1 - w) s + w (s * h)``, ``h`` exponentially decaying noise with
   RT60 ~ U(0.2, 1.0) s (normalised to unit energy), ``w ~ U(0.05, 0.3)``;
5. a gain ~ U(``gain_db``) dB;
6. silence with probability ``absent`` (never every stem of an item: the first silenced stem is kept if all would
   be).

The mixture of an item is the sum of its returned stems, so ``mix = sum_i s_i`` holds by construction; every
effect above is applied per stem. Pitch shift and tempo change are done at render time, where they are exact and
free (MIDI transposition and tempo in :mod:`mgdm_audio.audio.data.corpus` and the procedural generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations (0 switches one off); see the module docstring."""

    remix: float = 0.5
    eq: float = 0.5
    saturation: float = 0.15
    compression: float = 0.25
    reverb: float = 0.25
    gain_db: tuple[float, float] = (-9.0, 3.0)
    absent: float = 0.1


def peaking_sos(freq: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """RBJ cookbook peaking EQ as one second-order section."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * freq / sr
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * a, -2.0 * np.cos(w0), 1.0 - alpha * a])
    den = np.array([1.0 + alpha / a, -2.0 * np.cos(w0), 1.0 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def random_eq(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A random peaking filter, and with probability 1/3 a high- or low-pass."""
    freq = float(np.exp(rng.uniform(np.log(80.0), np.log(min(8000.0, 0.4 * sr)))))
    y = signal.sosfilt(peaking_sos(freq, float(rng.uniform(-9, 9)), float(rng.uniform(0.5, 2.0)), sr), x)
    if rng.random() < 1 / 3:
        if rng.random() < 0.5:
            sos = signal.butter(2, float(rng.uniform(30, 250)), "highpass", fs=sr, output="sos")
        else:
            sos = signal.butter(2, min(float(rng.uniform(2500, 9000)), 0.45 * sr), "lowpass", fs=sr, output="sos")
        y = signal.sosfilt(sos, y)
    return y


def saturate(x: np.ndarray, drive: float) -> np.ndarray:
    """``p tanh(d x / p) / tanh(d)`` with ``p = max |x|`` (the peak is kept)."""
    peak = float(np.abs(x).max(initial=0.0))
    if peak == 0.0:
        return x
    return peak * np.tanh(drive * x / peak) / np.tanh(drive)


def compress(x: np.ndarray, sr: int, threshold: float, ratio: float, window_s: float = 0.010) -> np.ndarray:
    """Feed-forward compression on the one-pole RMS envelope (see the module docstring)."""
    if threshold <= 0.0:
        return x
    pole = float(np.exp(-1.0 / (window_s * sr)))
    envelope = np.sqrt(np.maximum(signal.lfilter([1.0 - pole], [1.0, -pole], x * x), 1e-20))
    gain = np.minimum(1.0, (envelope / threshold) ** (1.0 / ratio - 1.0))
    return x * gain


def reverb(x: np.ndarray, sr: int, rng: np.random.Generator, rt60: float, wet: float) -> np.ndarray:
    """``(1 - w) x + w (x * h)`` with ``h`` unit-energy noise decaying by 60 dB in ``rt60`` seconds."""
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    h = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60)
    h /= np.sqrt(np.sum(h**2))
    return (1.0 - wet) * x + wet * signal.fftconvolve(x, h)[: x.size]


def augment_stems(stems: np.ndarray, sr: int, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Augment every stem of ``stems`` ``(S, T)`` independently (module docstring, steps 1-6); float32 out."""
    out = np.asarray(stems, dtype=np.float64).copy()
    silenced = []
    for i in range(out.shape[0]):
        x = out[i]
        if rng.random() < config.eq:
            x = random_eq(x, sr, rng)
        if rng.random() < config.saturation:
            x = saturate(x, float(rng.uniform(1.0, 3.0)))
        if rng.random() < config.compression:
            rms = float(np.sqrt(np.mean(x**2)))
            x = compress(x, sr, rms * float(rng.uniform(0.7, 1.5)), float(rng.uniform(2.0, 6.0)))
        if rng.random() < config.reverb:
            x = reverb(x, sr, rng, float(rng.uniform(0.2, 1.0)), float(rng.uniform(0.05, 0.3)))
        x = x * 10.0 ** (float(rng.uniform(*config.gain_db)) / 20.0)
        if rng.random() < config.absent:
            silenced.append(i)
        out[i] = x
    if len(silenced) == out.shape[0]:
        silenced = silenced[1:]
    out[silenced] = 0.0
    return out.astype(np.float32)
