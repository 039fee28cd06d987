"""Timbre sources: each renderer plays the MIDI pitch, is non-silent and deterministic; class map; no reserved data.

A few seconds of audio per source; soundfont sources are skipped when their Debian package is not installed, the
Salamander piano when its npm samples are not (see mgdm_audio/audio/data/sampler.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from mgdm_audio.audio.data import sampler, synth
from mgdm_audio.audio.data.procedural import (
    BASS_PROGRAMS,
    GUITAR_PROGRAMS,
    PIANO_PROGRAMS,
    STEM_NAMES,
    Note,
    StemScore,
    generate_song,
)
from mgdm_audio.audio.data.randsynth import DrumKit, RandomSynthRenderer, karplus_strong
from mgdm_audio.audio.data.render import SplitSpec
from mgdm_audio.audio.data.timbres import (
    TIMBRE_SOURCES,
    TimbreBank,
    TimbreChoice,
    check_installed,
    check_timbres,
    draw_timbres,
)
from mgdm_audio.core.errors import UserInputError

RATE = 22050
HAVE_SALAMANDER = any(sampler.NPM_CACHE.glob(sampler.PACKAGE_GLOB))
BACKEND = "fluidsynth" if synth.renderer_available("fluidsynth") else "tinysoundfont"


def spectrum_of(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude spectrum of the first second (Hann window, 8x zero padding) and its frequencies."""
    y = np.asarray(y[:RATE], dtype=float)
    return np.abs(np.fft.rfft(y * np.hanning(y.size), 8 * y.size)), np.fft.rfftfreq(8 * y.size, 1.0 / RATE)


def assert_pitch(y: np.ndarray, pitch: int) -> None:
    """FFT peaks: the strongest is a harmonic n f0 (n <= 8) within 30 cents; the fundamental region (+-30 cents)
    holds a peak within 30 dB of it; nothing below 0.9 f0 exceeds 10 % of it (no subharmonic, no wrong octave)."""
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
    spectrum, freqs = spectrum_of(y)
    peak = float(freqs[np.argmax(spectrum)])
    harmonic = max(1, round(peak / f0))
    assert harmonic <= 8, (peak, f0)
    assert abs(1200 * np.log2(peak / (harmonic * f0))) < 30, (peak, f0)
    near = np.abs(1200 * np.log2(np.maximum(freqs, 1.0) / f0)) < 30
    assert spectrum[near].max() > 10 ** (-30 / 20) * spectrum.max(), (peak, f0)
    assert spectrum[(freqs > 20) & (freqs < 0.9 * f0)].max(initial=0) < 0.1 * spectrum.max()


def assert_audible(y: np.ndarray, floor_db: float = -60.0) -> None:
    assert 20 * np.log10(np.sqrt(np.mean(np.asarray(y, dtype=float) ** 2)) + 1e-12) > floor_db


def note_stem(name: str, program: int, pitch: int, seconds: float = 1.2) -> StemScore:
    return StemScore(name, program, False, [Note(pitch, 100, 0.0, seconds)])


@pytest.mark.parametrize(
    ("stem", "program", "pitch"),
    [("guitar", 24, 52), ("guitar", 30, 57), ("bass", 33, 40), ("bass", 38, 36), ("piano", 0, 60), ("piano", 4, 64),
     ("piano", 5, 67), ("piano", 7, 57)],
)  # fmt: skip
def test_randomised_synthesis_plays_the_midi_pitch_and_is_seeded(stem, program, pitch):
    renderer = RandomSynthRenderer(RATE)
    for seed in (1, 2):
        score = note_stem(stem, program, pitch)
        score.timbre_seed = seed
        y = renderer.render(score, 1.5)
        assert y.dtype == np.float32 and y.shape == (int(1.5 * RATE),)
        assert_audible(y)
        assert_pitch(y, pitch)
        np.testing.assert_array_equal(y, renderer.render(score, 1.5))
    one, two = (renderer.render(StemScore(stem, program, False, score.notes, s), 1.5) for s in (1, 2))
    assert not np.allclose(one, two)


def test_karplus_strong_decays_at_its_t60():
    rng = np.random.default_rng(0)
    y = karplus_strong(110.0, 2 * RATE, RATE, t60=1.0, brightness=0.3, pluck=0.2, rng=rng)
    rms = [np.sqrt(np.mean(y[i : i + 2205] ** 2)) for i in (0, RATE)]
    decay_db = 20 * np.log10(rms[1] / rms[0])
    assert -75 < decay_db < -45  # ~ -60 dB per second for the fundamental, faster for the upper partials


def test_synthesised_drum_kit_is_percussive_and_maps_every_gm_key():
    kit = DrumKit(RATE, np.random.default_rng(3))
    kick, hat = kit.hit(36), kit.hit(42)
    assert abs(kick).max() == pytest.approx(1.0) and abs(hat).max() == pytest.approx(1.0)

    def fraction_below(x: np.ndarray, hz: float) -> float:
        power = np.abs(np.fft.rfft(x)) ** 2
        return float(power[np.fft.rfftfreq(x.size, 1 / RATE) < hz].sum() / power.sum())

    assert fraction_below(kick, 250.0) > 0.5 and fraction_below(hat, 3000.0) < 0.1
    assert np.abs(kick[-RATE // 10 :]).max() < 0.05 * np.abs(kick).max()  # it decays
    assert all(kit.hit(key).size > 0 for key in range(35, 82))  # unknown keys fall back to a snare


SOUNDFONT_CASES = [
    ("fluidr3", "bass", 33, 40), ("musescore", "guitar", 25, 64), ("musescore", "piano", 0, 60),
    ("opl3", "piano", 0, 60), ("opl3", "bass", 33, 45), ("opl3", "guitar", 29, 52),
]  # fmt: skip


@pytest.mark.parametrize(("source", "stem", "program", "pitch"), SOUNDFONT_CASES)
def test_soundfont_sources_play_the_midi_pitch(source, stem, program, pitch):
    path = TIMBRE_SOURCES[source].soundfont
    if not path.is_file():
        pytest.skip(f"{path} is not installed ({TIMBRE_SOURCES[source].install})")
    pytest.importorskip("tinysoundfont")
    bank = TimbreBank(RATE, BACKEND)
    choice = TimbreChoice(source, program, path, 0)
    y = bank.render(note_stem(stem, 0, pitch), 1.5, choice, 0)
    assert_audible(y, -70.0)  # tinysoundfont plays MuseScore's pianos ~26 dB quieter than FluidSynth (measured)
    assert_pitch(y, pitch)
    np.testing.assert_array_equal(y, bank.render(note_stem(stem, 0, pitch), 1.5, choice, 0))


@pytest.mark.parametrize("source", ["avl", "opl3", "fluidr3"])
def test_drum_kits_sound_on_the_keys_the_generators_use(source):
    kits = TIMBRE_SOURCES[source].kits
    if not all(k[0].is_file() for k in kits):
        pytest.skip(f"{source} is not installed ({TIMBRE_SOURCES[source].install})")
    pytest.importorskip("tinysoundfont")
    bank = TimbreBank(RATE, BACKEND)
    for path, bank_number, program in kits[:2]:
        for key in (36, 38, 39, 42, 45, 46, 47, 49, 50, 51):
            hit = StemScore("drums", 0, True, [Note(key, 100, 0.0, 0.2)])
            y = bank.render(hit, 0.5, TimbreChoice(source, program, path, bank_number), 0)
            assert_audible(y), (path.name, key)


@pytest.mark.skipif(not HAVE_SALAMANDER, reason=f"Salamander samples not installed: {sampler.INSTALL_HINT}")
def test_salamander_picks_the_nearest_sample_and_plays_the_pitch():
    renderer = sampler.SalamanderRenderer(RATE)
    pitches = sorted({p for p, _ in renderer.samples})
    assert pitches[0] == 21 and all(b - a == 3 for a, b in zip(pitches, pitches[1:], strict=False))  # A0, C1, D#1...
    assert renderer.nearest(61, 100)[0] == 60 and renderer.nearest(62, 100)[0] == 63
    velocities = sorted({v for _, v in renderer.samples})
    assert renderer.nearest(60, 1)[1] == velocities[0] and renderer.nearest(60, 127)[1] == velocities[-1]
    for pitch in (47, 61, 74):
        y = renderer.render(note_stem("piano", 0, pitch), 1.5)
        assert_audible(y)
        assert_pitch(y, pitch)
    soft = renderer.render(StemScore("piano", 0, False, [Note(60, 30, 0.0, 1.0)]), 1.0)
    loud = renderer.render(StemScore("piano", 0, False, [Note(60, 120, 0.0, 1.0)]), 1.0)
    assert np.abs(loud).max() > 2 * np.abs(soft).max()


def test_sample_names_map_to_midi_pitch_and_velocity():
    from pathlib import Path

    assert sampler.sample_key(Path("C4v10.ogg")) == (60, 80)
    assert sampler.sample_key(Path("D#1v4.ogg")) == (27, 32)
    assert sampler.sample_key(Path("A0v13.ogg")) == (21, 104)


def test_timbre_draws_respect_slakh_classes_and_are_seeded():
    timbres = {
        "bass": ["fluidr3", "randsynth"],
        "drums": ["fluidr3", "avl", "randsynth"],
        "guitar": ["musescore", "randsynth"],
        "piano": ["salamander", "fluidr3", "randsynth"],
    }
    check_timbres(timbres, "test")
    seen = {stem: set() for stem in STEM_NAMES}
    for seed in range(200):
        song = generate_song(seed, 4.0)
        choices = draw_timbres(timbres, song, seed)
        assert choices == draw_timbres(timbres, song, seed)
        for stem, choice in choices.items():
            seen[stem].add(choice.source)
            assert choice.source in timbres[stem]
        assert choices["bass"].program in BASS_PROGRAMS and choices["guitar"].program in GUITAR_PROGRAMS
        assert choices["piano"].program in PIANO_PROGRAMS
        kit = choices["drums"]
        assert (kit.soundfont, kit.bank, kit.program) in TIMBRE_SOURCES[kit.source].kits or kit.source == "randsynth"
    assert all(seen[stem] == set(timbres[stem]) for stem in STEM_NAMES)


def test_timbre_lists_are_checked_and_no_source_uses_reserved_data(tmp_path, monkeypatch):
    for source in TIMBRE_SOURCES.values():
        assert not any(synth.is_reserved_soundfont(path) for path in source.files())
    with pytest.raises(UserInputError, match="cannot play guitar"):
        check_timbres({"bass": ["opl3"], "drums": ["avl"], "guitar": ["avl"], "piano": ["salamander"]}, "x")
    with pytest.raises(UserInputError, match="unknown timbre source 'timgm'"):
        SplitSpec(
            name="t", timbres={"bass": ["timgm"], "drums": ["opl3"], "guitar": ["opl3"], "piano": ["opl3"]}
        ).validate()
    monkeypatch.setattr(sampler, "NPM_CACHE", tmp_path)
    with pytest.raises(UserInputError, match="npm install"):
        check_installed({"piano": ["salamander"]}, "x")


def test_a_timbre_split_renders_the_same_bytes_twice_and_records_its_sources(tmp_path):
    import json

    pytest.importorskip("tinysoundfont")
    sources = ["randsynth", "fluidr3"] if synth.FLUID_R3_GM.is_file() else ["randsynth"]
    spec = SplitSpec(
        name="train",
        source="procedural",
        tracks=2,
        seconds=3.0,
        seed=40,
        renderer="tinysoundfont",
        timbres={stem: sources for stem in STEM_NAMES},
    )
    from mgdm_audio.audio.data.render import render_split

    for root in ("a", "b"):
        render_split(tmp_path / root, spec, sample_rate=RATE, progress=False)
    for track in ("Track00000", "Track00001"):
        for name in (*STEM_NAMES, "mix"):
            first = (tmp_path / "a/train" / track / f"{name}.flac").read_bytes()
            assert first == (tmp_path / "b/train" / track / f"{name}.flac").read_bytes()
        meta = json.loads((tmp_path / "a/train" / track / "metadata.json").read_text())
        assert set(meta["timbres"]) == set(STEM_NAMES) and meta["soundfont"] is None
        assert all(meta["timbres"][s]["source"] in sources for s in STEM_NAMES)
        assert meta["programs"]["bass"] in BASS_PROGRAMS and meta["programs"]["guitar"] in GUITAR_PROGRAMS
