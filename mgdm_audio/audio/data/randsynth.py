"""Randomised synthesis of stem scores (domain randomisation over timbre), vectorised numpy + scipy filters.

Every parameter is drawn from ``numpy.random.default_rng([stem.timbre_seed, stem.program, SALT])``, so a stem's
audio is a function of its score and seed alone. The instrument family follows the stem's General-MIDI program
inside its Slakh class:

* guitar (24-31) and bass (32-37): Karplus-Strong plucked string. The string is a delay line of ``P = sr / f0``
  samples closed by a loss ``g``, the two-point average ``(1 + z^-1) / 2`` (half a sample of delay) and a first-order
  allpass ``(c + z^-1) / (1 + c z^-1)`` of delay ``d`` (``c = (1 - d) / (1 + d)``) for the fractional part:
  ``y[n] = x[n] + g L(y)[n - N]``, ``N + 1/2 + d = P``; ``g = 10^(-3 P / (T60 sr))`` sets the decay. Because
  ``N >= 2``, the recursion is computed one block of ``N`` samples at a time (one ``lfilter`` call per block, its
  state carried). The excitation is one period of low-passed noise with a pluck-position comb ``1 - z^-round(bN)``.
  Programs 29/30 (overdriven / distorted guitar) and, with probability 0.25, the others go through an amp model:
  pre-emphasis, ``tanh(k x + b) - tanh(b)`` (asymmetric soft clipping), a cabinet band-pass.
* bass 38-39 (synth bass) and keys 6-7 (harpsichord, clavinet): subtractive, a polyBLEP sawtooth or square wave
  through a Butterworth low-pass, cross-faded between a bright and a dark cut-off by a decaying filter envelope.
* keys 0-3 (acoustic pianos): additive, partials ``f_k = k f0 sqrt(1 + B k^2)`` (inharmonicity ``B``) with
  amplitudes ``a_k ~ k^-tilt`` and decay times ``tau_k = tau_1 k^-alpha``.
* keys 4-5 (electric pianos): two-operator FM, ``sin(2 pi f0 t + I(t) sin(2 pi r f0 t))`` with a decaying index.
* drums: a synthesised kit drawn per stem: kick (sine with an exponential pitch drop and a click), snare (two
  damped modes plus band-passed noise), clap (noise bursts), hats / crash / ride (six square waves at inharmonic
  ratios plus noise, high-passed), toms (pitched like the kick). Each GM key is rendered once per stem and the
  one-shot is added at every onset, scaled by ``(velocity / 127)^1.5``.

Each rendered stem is scaled to the RMS level ``RMS_DBFS`` of its class, then down to a peak of at most ``PEAK_LIMIT``.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from mgdm_audio.audio.data.procedural import StemScore
from mgdm_audio.audio.data.synth import note_events

SALT = 0x5A17
RELEASE_S = 0.08
MAX_NOTE_S = 4.0
#: stem RMS after rendering (dBFS), near the medians of the FluidR3_GM renders; the peak is then kept <= PEAK_LIMIT
RMS_DBFS = {"bass": -27.0, "drums": -31.0, "guitar": -25.0, "piano": -30.0}
PEAK_LIMIT = 0.5
TWO_PI = 2.0 * np.pi


def midi_hz(pitch: float) -> float:
    """Equal temperament, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def karplus_strong(f0: float, n: int, sr: int, t60: float, brightness: float, pluck: float, rng) -> np.ndarray:
    """``n`` samples of a plucked string at ``f0`` Hz (see the module docstring for the recursion)."""
    period = sr / f0
    delay = max(2, int(np.floor(period - 0.6)))
    frac = period - 0.5 - delay
    c = (1.0 - frac) / (1.0 + frac)
    b = np.convolve([0.5, 0.5], [c, 1.0])
    a = np.array([1.0, c])
    g = 10.0 ** (-3.0 * period / (t60 * sr))
    excitation = rng.standard_normal(delay)
    excitation = signal.lfilter([1.0 - brightness], [1.0, -brightness], excitation)
    excitation -= np.roll(excitation, max(1, int(round(pluck * delay))))
    excitation -= excitation.mean()
    y = np.zeros(n + delay)
    y[:delay] = excitation
    zi = np.zeros(2)
    for k in range(delay, n, delay):
        stop = min(k + delay, n)
        v, zi = signal.lfilter(b, a, y[k - delay : k], zi=zi)
        y[k:stop] += g * v[: stop - k]
    out = y[:n]
    return out / (np.abs(out).max() + 1e-9)


def polyblep(phase: np.ndarray, dt: float) -> np.ndarray:
    """PolyBLEP correction of a unit step at phase 0 (phase in [0, 1), increment ``dt`` per sample)."""
    out = np.zeros_like(phase)
    lo = phase < dt
    t = phase[lo] / dt
    out[lo] = t + t - t * t - 1.0
    hi = phase > 1.0 - dt
    t = (phase[hi] - 1.0) / dt
    out[hi] = t * t + t + t + 1.0
    return out


def oscillator(f0: float, n: int, sr: int, shape: str, phase0: float) -> np.ndarray:
    """Band-limited (polyBLEP) sawtooth or square wave of ``n`` samples."""
    dt = f0 / sr
    phase = (phase0 + dt * np.arange(n)) % 1.0
    saw = 2.0 * phase - 1.0 - polyblep(phase, dt)
    if shape == "saw":
        return saw
    shifted = (phase + 0.5) % 1.0
    return 0.5 * (saw - (2.0 * shifted - 1.0 - polyblep(shifted, dt)))


def amp_model(x: np.ndarray, sr: int, rng, drive_db: float) -> np.ndarray:
    """Amp-style distortion: pre-emphasis, asymmetric tanh clipping, cabinet band-pass (80 Hz - 3..6 kHz)."""
    pre = signal.sosfilt(signal.butter(1, float(rng.uniform(300, 900)), "highpass", fs=sr, output="sos"), x)
    x = 0.5 * x + 0.5 * pre
    x = x / (np.abs(x).max() + 1e-9)
    k = 10.0 ** (drive_db / 20.0)
    bias = float(rng.uniform(0.0, 0.3))
    y = np.tanh(k * x + bias) - np.tanh(bias)
    cutoff = min(float(rng.uniform(3000, 6000)), 0.45 * sr)
    y = signal.sosfilt(signal.butter(2, [80.0, cutoff], "bandpass", fs=sr, output="sos"), y)
    return y / (np.abs(y).max() + 1e-9)


class PitchedVoice:
    """One randomised pitched instrument: ``note(pitch, velocity, n_on, n_total)`` -> a one-note waveform."""

    def __init__(self, program: int, stem_name: str, sr: int, rng: np.random.Generator) -> None:
        self.sr, self.rng = sr, rng
        if stem_name == "guitar" or (stem_name == "bass" and program < 38):
            self.family = "pluck"
            self.t60 = float(rng.uniform(1.0, 4.0) if stem_name == "guitar" else rng.uniform(0.8, 2.5))
            self.brightness = float(rng.uniform(0.0, 0.7) if stem_name == "guitar" else rng.uniform(0.4, 0.9))
            self.pluck = float(rng.uniform(0.08, 0.45))
        elif program >= 38 or program >= 6 and stem_name == "piano":
            self.family = "subtractive"
            self.shape = str(rng.choice(["saw", "square"]))
            self.cut_bright = float(rng.uniform(1500, 6000))
            self.cut_dark = float(rng.uniform(200, 1200))
            self.tau_filter = float(rng.uniform(0.05, 0.5))
            self.tau_amp = float(rng.uniform(0.3, 3.0))
        elif program >= 4:
            self.family = "fm"
            self.ratio = float(rng.choice([1.0, 2.0, 3.0, 4.0, 7.0, 14.0]))  # integer: partials stay harmonics of f0
            self.index = float(rng.uniform(0.5, 4.0))
            self.tau_index = float(rng.uniform(0.05, 0.6))
            self.tau_amp = float(rng.uniform(0.6, 3.0))
        else:
            self.family = "additive"
            self.partials = int(rng.integers(6, 13))
            self.tilt = float(rng.uniform(0.8, 2.0))
            self.jitter = rng.uniform(0.6, 1.4, size=self.partials)
            self.inharmonicity = float(10.0 ** rng.uniform(-5.0, -3.3))
            self.tau1 = float(rng.uniform(1.0, 5.0))
            self.alpha = float(rng.uniform(0.3, 1.2))
        self.release = float(rng.uniform(0.03, 0.2))

    def note(self, pitch: int, velocity: int, n_on: int, n_total: int) -> np.ndarray:
        """The waveform of one note held ``n_on`` samples, released until ``n_total`` samples."""
        sr, f0 = self.sr, midi_hz(pitch)
        t = np.arange(n_total) / sr
        level = (velocity / 127.0) ** 1.5
        if self.family == "pluck":
            y = karplus_strong(f0, n_total, sr, self.t60, self.brightness, self.pluck, self.rng)
        elif self.family == "subtractive":
            raw = oscillator(f0, n_total, sr, self.shape, float(self.rng.random()))
            nyq = 0.45 * sr
            bright = signal.sosfilt(signal.butter(2, min(self.cut_bright, nyq), fs=sr, output="sos"), raw)
            dark = signal.sosfilt(signal.butter(2, min(self.cut_dark, nyq), fs=sr, output="sos"), raw)
            env_f = np.exp(-t / self.tau_filter)
            y = (env_f * bright + (1.0 - env_f) * dark) * np.exp(-t / self.tau_amp)
        elif self.family == "fm":
            index = self.index * (0.5 + level) * np.exp(-t / self.tau_index)
            y = np.sin(TWO_PI * f0 * t + index * np.sin(TWO_PI * self.ratio * f0 * t)) * np.exp(-t / self.tau_amp)
        else:
            k = np.arange(1, self.partials + 1)
            freqs = k * f0 * np.sqrt(1.0 + self.inharmonicity * k**2)
            keep = freqs < 0.45 * sr
            amps = (k**-self.tilt * self.jitter)[keep]
            taus = (self.tau1 * k**-self.alpha)[keep]
            phases = TWO_PI * np.outer(freqs[keep], t)
            y = (amps[:, None] * np.sin(phases) * np.exp(-t[None, :] / taus[:, None])).sum(axis=0)
        y = y * level / (np.abs(y).max() + 1e-9)
        attack = min(n_total, max(1, int(0.003 * sr)))
        y[:attack] *= np.linspace(0.0, 1.0, attack)
        if n_total > n_on:
            y[n_on:] *= np.exp(-np.arange(n_total - n_on) / (self.release * sr))
        return y


def _metal(n: int, sr: int, base: float, rng) -> np.ndarray:
    """Six square waves at the 808's inharmonic ratios times ``base``, plus white noise."""
    ratios = np.array([2.0, 3.0, 4.16, 5.43, 6.79, 8.21])
    t = np.arange(n) / sr
    tone = np.sign(np.sin(TWO_PI * base * ratios[:, None] * t[None, :] + rng.uniform(0, TWO_PI, (6, 1)))).sum(0)
    return tone / 6.0 + float(rng.uniform(0.2, 1.0)) * rng.standard_normal(n)


def _filtered(x: np.ndarray, sr: int, kind: str, cutoff) -> np.ndarray:
    cutoff = np.minimum(np.asarray(cutoff, dtype=float), 0.45 * sr)
    return signal.sosfilt(signal.butter(2, cutoff, kind, fs=sr, output="sos"), x)


DRUM_CLASSES = {
    35: "kick", 36: "kick", 37: "snare", 38: "snare", 40: "snare", 39: "clap", 42: "hat", 44: "hat", 46: "open_hat",
    49: "crash", 52: "crash", 55: "crash", 57: "crash", 51: "ride", 53: "ride", 59: "ride",
    41: "tom_low", 43: "tom_low", 45: "tom_low", 47: "tom_mid", 48: "tom_mid", 50: "tom_high",
}  # fmt: skip


class DrumKit:
    """A synthesised drum kit drawn from ``rng``; ``hit(key)`` -> the one-shot of that GM percussion key."""

    def __init__(self, sr: int, rng: np.random.Generator) -> None:
        self.sr, self.rng = sr, rng
        self.kick = (float(rng.uniform(40, 65)), float(rng.uniform(100, 250)), float(rng.uniform(0.02, 0.08)))
        self.kick_decay = float(rng.uniform(0.15, 0.6))
        self.kick_drive = float(rng.uniform(1.0, 4.0))
        self.snare_tone = float(rng.uniform(150, 280))
        self.snare_noise = (float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.08, 0.3)))
        self.metal_base = float(rng.uniform(250, 450))
        self.hat_cut = float(rng.uniform(5000, 8500))
        self.tom_base = float(rng.uniform(70, 120))
        self._cache: dict[int, np.ndarray] = {}

    def hit(self, key: int) -> np.ndarray:
        """The one-shot (peak 1) of GM key ``key``; keys outside the kit map to a snare."""
        if key not in self._cache:
            self._cache[key] = self._make(DRUM_CLASSES.get(key, "snare"))
        return self._cache[key]

    def _make(self, kind: str) -> np.ndarray:
        sr, rng = self.sr, self.rng
        seconds = {"kick": self.kick_decay * 4, "crash": 2.0, "ride": 1.5, "open_hat": 0.6}.get(kind, 0.5)
        n = int(seconds * sr)
        t = np.arange(n) / sr
        if kind == "kick" or kind.startswith("tom"):
            if kind == "kick":
                f_end, f_start, tau_p = self.kick
                decay = self.kick_decay
            else:
                f_end = self.tom_base * {"tom_low": 1.0, "tom_mid": 1.35, "tom_high": 1.8}[kind]
                f_start, tau_p, decay = 1.6 * f_end, 0.05, 0.3
            freq = f_end + (f_start - f_end) * np.exp(-t / tau_p)
            y = np.sin(TWO_PI * np.cumsum(freq) / sr) * np.exp(-t / decay)
            click = _filtered(rng.standard_normal(n), sr, "highpass", 2000.0) * np.exp(-t / 0.004)
            y = np.tanh(self.kick_drive * (y + 0.3 * click)) if kind == "kick" else y + 0.1 * click
        elif kind == "snare":
            tone = np.sin(TWO_PI * self.snare_tone * t) + 0.5 * np.sin(TWO_PI * 1.6 * self.snare_tone * t)
            noise = _filtered(rng.standard_normal(n), sr, "bandpass", [1000.0, 9000.0])
            level, tau = self.snare_noise
            y = tone * np.exp(-t / 0.05) * (1 - level) + level * 3 * noise * np.exp(-t / tau)
        elif kind == "clap":
            noise = _filtered(rng.standard_normal(n), sr, "bandpass", [800.0, 3000.0])
            bursts = sum(np.exp(-np.clip(t - d, 0, None) / 0.008) * (t >= d) for d in (0.0, 0.011, 0.022))
            y = noise * (bursts + 0.5 * np.exp(-np.clip(t - 0.033, 0, None) / 0.12) * (t >= 0.033))
        else:
            metal = _metal(n, sr, self.metal_base, rng)
            decay = {"hat": 0.05, "open_hat": 0.3, "crash": 1.2, "ride": 1.0}[kind]
            cutoff = self.hat_cut if kind in ("hat", "open_hat") else 0.5 * self.hat_cut
            y = _filtered(metal, sr, "highpass", cutoff) * np.exp(-t / decay)
            if kind == "ride":
                y += 0.3 * np.sin(TWO_PI * 3.1 * self.metal_base * t) * np.exp(-t / 0.8)
        fade = min(n, int(0.01 * sr))
        y[n - fade :] *= np.linspace(1.0, 0.0, fade)
        return y / (np.abs(y).max() + 1e-9)


class RandomSynthRenderer:
    """Renders stem scores with randomised synthesis (the :class:`~mgdm_audio.audio.data.synth.StemRenderer`
    interface); the timbre is drawn from the stem's ``timbre_seed`` and program."""

    name = "randsynth"
    soundfont = None

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = int(sample_rate)

    def render(self, stem: StemScore, seconds: float) -> np.ndarray:
        sr = self.sample_rate
        n_samples = int(round(seconds * sr))
        rng = np.random.default_rng([stem.timbre_seed, stem.program, SALT])
        out = np.zeros(n_samples + int(MAX_NOTE_S * sr), dtype=np.float64)
        if stem.is_drum:
            kit = DrumKit(sr, rng)
            for start, is_on, pitch, velocity in note_events(stem, sr, n_samples):
                if is_on:
                    shot = kit.hit(pitch)
                    out[start : start + shot.size] += (velocity / 127.0) ** 1.5 * shot[: out.size - start]
        else:
            voice = PitchedVoice(stem.program, stem.name, sr, rng)
            max_n = int(MAX_NOTE_S * sr)
            for note in stem.notes:
                start = int(round(note.start * sr))
                if start >= n_samples:
                    continue
                n_on = max(1, min(int(round((note.end - note.start) * sr)), max_n))
                n_total = min(n_on + int(4 * voice.release * sr), max_n)
                out[start : start + n_total] += voice.note(note.pitch, note.velocity, n_on, n_total)
            drive = 0.0
            if stem.program in (29, 30):
                drive = float(rng.uniform(12, 20) if stem.program == 29 else rng.uniform(22, 34))
            elif stem.name == "guitar" and rng.random() < 0.25:
                drive = float(rng.uniform(4, 12))
            if drive > 0:
                out = amp_model(out, sr, rng, drive) * float(np.abs(out).max())
        out = out[:n_samples]
        rms = float(np.sqrt(np.mean(out**2))) if out.size else 0.0
        if rms == 0.0:
            return out.astype(np.float32)
        out *= 10.0 ** (RMS_DBFS[stem.name if not stem.is_drum else "drums"] / 20.0) / rms
        peak = float(np.abs(out).max())
        return (out * min(1.0, PEAK_LIMIT / peak)).astype(np.float32)
