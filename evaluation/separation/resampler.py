"""Which resampler the separator uses: the hand-written windowed sinc (``mgdm_audio.audio.io.resample``) against
python-soxr (HQ and VHQ), on accuracy and speed.

    OMP_NUM_THREADS=1 python evaluation/separation/resampler.py --out evaluation/results/resampler.md

Accuracy, for each rate pair: (1) *passband*: a sum of 12 sines with seeded frequencies in [50 Hz, 0.85 x the lower
Nyquist] and phases is resampled and compared with the same sines computed at the output rate (SNR in dB, the first
and last 0.1 s left out); (2) *stop band*: a sine at 1.2 x the output Nyquist (it must vanish when going down) is
resampled; its output RMS relative to the input's, in dB. Speed: the median of 3 timings of 60 s of audio (1 channel
going down, 8 channels going up: the stems of K = 2 samples), in seconds, one thread.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import soxr
import torch

from mgdm_audio.audio.io import resample
from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance

PAIRS = [(44100, 22050), (48000, 22050), (22050, 44100), (22050, 48000)]


def sines(rate: int, seconds: float, freqs: np.ndarray, phases: np.ndarray) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None]).sum(0) / len(freqs)).astype(np.float64)


def methods() -> dict:
    return {
        "hand-written sinc": lambda x, a, b: resample(torch.from_numpy(x), a, b).numpy(),
        "soxr HQ": lambda x, a, b: soxr.resample(x.T, a, b, quality="HQ").T,
        "soxr VHQ": lambda x, a, b: soxr.resample(x.T, a, b, quality="VHQ").T,
    }


def accuracy(fn, sr_in: int, sr_out: int) -> tuple[float, float | None]:
    rng = np.random.default_rng(sr_in + sr_out)
    nyq = min(sr_in, sr_out) / 2
    freqs, phases = rng.uniform(50, 0.85 * nyq, 12), rng.uniform(0, 2 * np.pi, 12)
    x = sines(sr_in, 2.0, freqs, phases)
    y = fn(x[None].astype(np.float32), sr_in, sr_out)[0].astype(np.float64)
    ref = sines(sr_out, 2.0, freqs, phases)
    n = min(len(y), len(ref))
    edge = int(0.1 * sr_out)
    err = y[edge : n - edge] - ref[edge : n - edge]
    snr = 10 * math.log10(np.sum(ref[edge : n - edge] ** 2) / np.sum(err**2))
    if sr_out > sr_in:
        return snr, None
    tone = sines(sr_in, 2.0, np.array([1.2 * sr_out / 2]), np.array([0.0]))
    z = fn(tone[None].astype(np.float32), sr_in, sr_out)[0].astype(np.float64)[edge:-edge]
    return snr, 20 * math.log10(np.sqrt(np.mean(z**2)) / np.sqrt(np.mean(tone**2)) + 1e-300)


def speed(fn, sr_in: int, sr_out: int) -> float:
    channels = 1 if sr_out < sr_in else 8
    x = np.random.default_rng(0).standard_normal((channels, 60 * sr_in)).astype(np.float32) * 0.1
    times = []
    for _ in range(3):
        tic = time.perf_counter()
        fn(x, sr_in, sr_out)
        times.append(time.perf_counter() - tic)
    return sorted(times)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    prov = script_provenance(None, "cpu")  # no learnt network
    lines = [
        "# Resamplers: hand-written windowed sinc against python-soxr",
        "",
        "Made by `evaluation/separation/resampler.py` (method in its docstring), "
        f"{time.strftime('%Y-%m-%d')}, one thread on the shared 2-core CPU (timings vary with the load).",
        "",
        "| rate pair | method | passband SNR (dB) | stop band, 1.2 x Nyquist (dB) | 60 s of audio (s) |",
        "|---|---|---|---|---|",
    ]
    for sr_in, sr_out in PAIRS:
        for name, fn in methods().items():
            snr, stop = accuracy(fn, sr_in, sr_out)
            seconds = speed(fn, sr_in, sr_out)
            stop_cell = "-" if stop is None else f"{stop:.1f}"
            lines.append(f"| {sr_in} -> {sr_out} | {name} | {snr:.1f} | {stop_cell} | {seconds:.3f} |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n" + provenance_markdown(prov))


if __name__ == "__main__":
    main()
