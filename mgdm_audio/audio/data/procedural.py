"""Procedural 4-stem songs (bass, drums, guitar, piano) as note lists, ready for a soundfont renderer.

A song is drawn from one integer seed: tempo ~ U(80, 150) bpm, a key (12 roots), a 4-bar chord progression
(8 major and 5 minor ones, named ``maj0..maj7`` / ``min0..min4``; the mode follows the progression), sevenths with
probability 0.3, one style per instrument and one General-MIDI program per pitched stem drawn from its Slakh class
(bass 32-39, guitar 24-31, piano 0-7). Drums use GM percussion keys on channel 10 (kick 36, snare 38, hats 42/46,
crash 49, ride 51, toms 45/47/50, clap 39) with a fill on some 4th bars and a crash every 8 bars. Every onset gets a
Gaussian jitter of 10 ms (humanising), velocities are random within a style's range.

The *content key* of a song is ``progression|bass|guitar|piano|drums`` (the progression id and the four style
names): a recipe reserves progressions (and optionally styles) for its test splits, so no test content key occurs in
train. Generating a 30-s song takes a few milliseconds and needs only numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mgdm_audio.core.errors import UserInputError

STEM_NAMES: tuple[str, ...] = ("bass", "drums", "guitar", "piano")

BASS_PROGRAMS = tuple(range(32, 40))
GUITAR_PROGRAMS = tuple(range(24, 32))
PIANO_PROGRAMS = tuple(range(0, 8))

KICK, SNARE, CLAP, CLOSED_HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 39, 42, 46, 49, 51
TOM_LOW, TOM_MID, TOM_HIGH = 45, 47, 50

KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)

#: Scale degrees as roman numerals (the case only says the chord's quality: the scale decides it).
ROMAN_NUMERALS = ("i", "ii", "iii", "iv", "v", "vi", "vii")
#: Chord progressions, one chord per bar, looped: ids ``maj0..maj7`` over the major scale, ``min0..min4`` over the
#: natural minor scale.
MAJOR_PROGRESSIONS = (
    "I V vi IV",
    "I vi IV V",
    "I IV V IV",
    "vi IV I V",
    "I IV I V",
    "ii V I I",
    "I iii IV V",
    "I V IV IV",
)
MINOR_PROGRESSIONS = ("i VI III VII", "i iv v i", "i VII VI v", "i iv VII III", "i VI iv v")


def scale_degrees(numerals: str) -> tuple[int, ...]:
    """0-based scale degrees of space-separated roman numerals: ``"I V vi IV"`` -> ``(0, 4, 5, 3)``."""
    return tuple(ROMAN_NUMERALS.index(numeral.lower()) for numeral in numerals.split())


#: Progression id -> 0-based scale degrees.
PROGRESSIONS: dict[str, tuple[int, ...]] = {
    **{f"maj{i}": scale_degrees(numerals) for i, numerals in enumerate(MAJOR_PROGRESSIONS)},
    **{f"min{i}": scale_degrees(numerals) for i, numerals in enumerate(MINOR_PROGRESSIONS)},
}

STYLES: dict[str, tuple[str, ...]] = {
    "bass": ("roots", "eighths", "root_fifth_octave"),
    "guitar": ("strum", "syncopated", "arpeggio"),
    "piano": ("block", "arpeggio", "offbeat"),
    "drums": ("rock", "halftime", "four_on_floor"),
}

ONSET_JITTER_S = 0.010
MIN_NOTE_S = 0.02


@dataclass(frozen=True)
class Note:
    """One MIDI note: key number, velocity 1-127, start and end in seconds."""

    pitch: int
    velocity: int
    start: float
    end: float


@dataclass
class StemScore:
    """The notes of one stem, played with one GM program (``is_drum``: the percussion bank on channel 10).

    ``timbre_seed`` seeds renderers whose timbre is drawn at random (randomised synthesis); soundfonts ignore it.
    """

    name: str
    program: int
    is_drum: bool
    notes: list[Note] = field(default_factory=list)
    timbre_seed: int = 0


@dataclass
class Song:
    """Four stem scores of one track, its length in seconds, its content key and its metadata."""

    stems: dict[str, StemScore]
    seconds: float
    content_key: str
    metadata: dict


class NoteSink:
    """Adds notes to a stem, clipped to ``[0, end_s)``, dropping notes shorter than 20 ms after clipping."""

    def __init__(self, stem: StemScore, end_s: float, rng: np.random.Generator, jitter_s: float) -> None:
        self.stem, self.end_s, self.rng, self.jitter_s = stem, end_s, rng, jitter_s

    def add(self, pitch: int, start: float, end: float, velocity: float) -> None:
        shift = float(self.rng.normal(0.0, self.jitter_s)) if self.jitter_s > 0 else 0.0
        start, end = max(0.0, start + shift), end + shift
        end = min(end, self.end_s)
        if start >= self.end_s or end - start < MIN_NOTE_S:
            return
        self.stem.notes.append(Note(int(pitch), int(np.clip(round(velocity), 1, 127)), float(start), float(end)))


def draw_programs(rng: np.random.Generator) -> dict[str, int]:
    """One GM program per pitched stem inside its Slakh class (three draws, in the order bass, guitar, piano)."""
    return {
        "bass": int(rng.choice(BASS_PROGRAMS)),
        "guitar": int(rng.choice(GUITAR_PROGRAMS)),
        "piano": int(rng.choice(PIANO_PROGRAMS)),
    }


def empty_stems(programs: Mapping[str, int]) -> dict[str, StemScore]:
    """The four stem scores without notes (drums: kit 0 on the percussion channel)."""
    return {
        "bass": StemScore("bass", programs["bass"], False),
        "drums": StemScore("drums", 0, True),
        "guitar": StemScore("guitar", programs["guitar"], False),
        "piano": StemScore("piano", programs["piano"], False),
    }


def draw_stems(
    rng: np.random.Generator, seconds: float, jitter_s: float = ONSET_JITTER_S
) -> tuple[dict[str, int], dict[str, StemScore], dict[str, NoteSink]]:
    """The programs (:func:`draw_programs`), the four empty stems and a :class:`NoteSink` on each, clipping notes at
    ``seconds`` and jittering onsets by ``jitter_s``."""
    programs = draw_programs(rng)
    stems = empty_stems(programs)
    return programs, stems, {name: NoteSink(stem, seconds, rng, jitter_s) for name, stem in stems.items()}


def chord_pitches(scale: Sequence[int], key: int, degree: int, sevenths: bool) -> list[int]:
    """Stacked thirds on ``degree`` of ``scale`` transposed to ``key`` (pitch classes may exceed 11)."""
    size = 4 if sevenths else 3
    return [key + scale[(degree + 2 * i) % 7] + 12 * ((degree + 2 * i) // 7) for i in range(size)]


def fold(pitch: int, low: int) -> int:
    """The pitch of ``pitch``'s class in the octave ``[low, low + 12)``."""
    return low + (pitch - low) % 12


def add_drum_bar(
    drums: NoteSink, rng: np.random.Generator, style: str, t0: float, beat: float, beats: int, fill: bool, crash: bool
) -> None:
    """One bar of ``beats`` beats of the drum ``style`` (eighth-note grid) starting at ``t0``."""
    if crash:
        drums.add(CRASH, t0, t0 + beat, 100)
    for k in range(2 * beats):
        t = t0 + k * beat / 2
        if fill and k >= 2 * beats - 4:
            drums.add((TOM_HIGH, TOM_MID, TOM_LOW, SNARE)[k - (2 * beats - 4)], t, t + beat / 4, rng.integers(90, 120))
            continue
        hat = RIDE if style == "halftime" and k % 2 == 0 else CLOSED_HAT
        if style == "halftime" and k % 2 == 1:
            hat = CLOSED_HAT if rng.random() < 0.5 else -1
        if hat > 0:
            drums.add(hat, t, t + beat / 4, rng.integers(60, 95))
        on_beat, beat_index = k % 2 == 0, k // 2
        if style == "four_on_floor":
            if on_beat:
                drums.add(KICK, t, t + beat / 4, 110)
            if on_beat and beat_index % 2 == 1:
                drums.add(CLAP if rng.random() < 0.3 else SNARE, t, t + beat / 4, 100)
        elif style == "halftime":
            if k == 0 or (k == 5 and rng.random() < 0.5):
                drums.add(KICK, t, t + beat / 4, 110)
            if k == 4:
                drums.add(SNARE, t, t + beat / 4, 105)
        else:  # rock
            if (on_beat and beat_index % 2 == 0) or (k == 5 and rng.random() < 0.3):
                drums.add(KICK, t, t + beat / 4, 110)
            if on_beat and beat_index % 2 == 1:
                drums.add(SNARE, t, t + beat / 4, 105)


def check_choices(progressions: Sequence[str] | None, styles: Mapping[str, Sequence[str]] | None) -> None:
    """Raise :class:`UserInputError` for an unknown progression id, instrument or style name."""
    for name in progressions or ():
        if name not in PROGRESSIONS:
            raise UserInputError(f"Unknown progression {name!r}; choose from {', '.join(PROGRESSIONS)}.")
    for instrument, names in (styles or {}).items():
        if instrument not in STYLES:
            raise UserInputError(f"Unknown instrument {instrument!r} in styles; choose from {', '.join(STYLES)}.")
        for name in names:
            if name not in STYLES[instrument]:
                raise UserInputError(
                    f"Unknown {instrument} style {name!r}; choose from {', '.join(STYLES[instrument])}."
                )


def draw_content(
    rng: np.random.Generator, progressions: Sequence[str] | None, styles: Mapping[str, Sequence[str]] | None
) -> tuple[str, dict[str, str]]:
    """The first draws of a song: its progression id and one style per instrument (all of the content key)."""
    allowed = list(progressions) if progressions else list(PROGRESSIONS)
    progression_id = allowed[int(rng.integers(len(allowed)))]
    chosen = {}
    for instrument, names in STYLES.items():
        pool = list((styles or {}).get(instrument) or names)
        chosen[instrument] = pool[int(rng.integers(len(pool)))]
    return progression_id, chosen


def make_content_key(progression_id: str, styles: Mapping[str, str]) -> str:
    """``progression|bass|guitar|piano|drums``."""
    return "|".join([progression_id, *(styles[i] for i in ("bass", "guitar", "piano", "drums"))])


def song_content_key(
    seed: int, progressions: Sequence[str] | None = None, styles: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The content key :func:`generate_song` gives ``seed``, without generating the notes (microseconds)."""
    check_choices(progressions, styles)
    return make_content_key(*draw_content(np.random.default_rng([seed, 0x51A4]), progressions, styles))


def generate_song(
    seed: int,
    seconds: float,
    progressions: Sequence[str] | None = None,
    styles: Mapping[str, Sequence[str]] | None = None,
    jitter_s: float = ONSET_JITTER_S,
) -> Song:
    """Draw one procedural song from ``seed``; ``progressions``/``styles`` restrict the choices (None: all)."""
    check_choices(progressions, styles)
    rng = np.random.default_rng([seed, 0x51A4])
    progression_id, chosen = draw_content(rng, progressions, styles)
    tempo = float(rng.uniform(80.0, 150.0))
    key = int(rng.integers(12))
    sevenths = bool(rng.random() < 0.3)
    programs, stems, sink = draw_stems(rng, seconds, jitter_s)
    minor = progression_id.startswith("min")
    scale = MINOR_SCALE if minor else MAJOR_SCALE
    degrees = PROGRESSIONS[progression_id]
    beat = 60.0 / tempo
    bar = 4 * beat

    for b in range(int(np.ceil(seconds / bar))):
        t0 = b * bar
        degree = degrees[b % len(degrees)]
        chord = chord_pitches(scale, key, degree, sevenths)
        root = key + scale[degree]
        add_bass_bar(sink["bass"], rng, chosen["bass"], root, t0, beat)
        fill = b % 4 == 3 and rng.random() < 0.6
        add_drum_bar(sink["drums"], rng, chosen["drums"], t0, beat, 4, fill, crash=b % 8 == 0)
        add_guitar_bar(sink["guitar"], rng, chosen["guitar"], chord, root, t0, beat)
        add_piano_bar(sink["piano"], rng, chosen["piano"], chord, root, t0, beat)

    content_key = make_content_key(progression_id, chosen)
    metadata = {
        "source": "procedural",
        "seed": int(seed),
        "tempo_bpm": round(tempo, 4),
        "key": KEY_NAMES[key] + (" minor" if minor else " major"),
        "progression": progression_id,
        "sevenths": sevenths,
        "styles": chosen,
        "programs": {**programs, "drums": 0},
        "content_key": content_key,
    }
    return Song(stems, float(seconds), content_key, metadata)


def add_bass_bar(bass: NoteSink, rng: np.random.Generator, style: str, root: int, t0: float, beat: float) -> None:
    """One bar of bass on ``root``, voiced in A1..G#2 (MIDI 33-44)."""
    low = fold(root, 33)
    if style == "roots":
        for k in range(4):
            bass.add(low, t0 + k * beat, t0 + (k + 0.9) * beat, rng.integers(85, 110))
    elif style == "eighths":
        for k in range(8):
            octave = 12 if k == 6 and rng.random() < 0.5 else 0
            bass.add(low + octave, t0 + k * beat / 2, t0 + (k + 0.85) * beat / 2, rng.integers(80, 110))
    else:  # root_fifth_octave
        for k, step in enumerate((0, 7, 12, 7)):
            bass.add(low + step, t0 + k * beat, t0 + (k + 0.8) * beat, rng.integers(85, 110))


def add_guitar_bar(
    guitar: NoteSink, rng: np.random.Generator, style: str, chord: list[int], root: int, t0: float, beat: float
) -> None:
    """One bar of guitar: strums (12 ms between strings, 70% down-strokes) or an eighth-note arpeggio, E2..E5."""
    voicing = sorted({fold(p, 52) for p in chord} | {fold(root, 40)})
    if style in ("strum", "syncopated"):
        hits = (0.0, 1.0, 2.0, 3.0) if style == "strum" else (0.0, 1.5, 2.5, 3.0)
        for h in hits:
            strings = voicing if rng.random() < 0.7 else voicing[::-1]
            for i, p in enumerate(strings):
                guitar.add(p, t0 + h * beat + 0.012 * i, t0 + (h + 0.95) * beat, rng.integers(70, 100))
    else:  # arpeggio up and down
        sequence = voicing + voicing[-2:0:-1]
        for k in range(8):
            guitar.add(sequence[k % len(sequence)], t0 + k * beat / 2, t0 + (k + 1.5) * beat / 2, rng.integers(65, 95))


def add_piano_bar(
    piano: NoteSink, rng: np.random.Generator, style: str, chord: list[int], root: int, t0: float, beat: float
) -> None:
    """One bar of piano in C4..B4 (right hand) plus a left-hand root in C3..B3 for block chords."""
    right = sorted(fold(p, 60) for p in chord)
    if style == "block":
        for h in (0.0, 2.0):
            for p in [*right, right[0] + 12]:
                piano.add(p, t0 + h * beat, t0 + (h + 1.9) * beat, rng.integers(60, 90))
        piano.add(fold(root, 48), t0, t0 + 3.8 * beat, 75)
    elif style == "arpeggio":
        pattern = [*right, right[0] + 12, right[1] + 12]
        for k in range(8):
            piano.add(pattern[k % len(pattern)], t0 + k * beat / 2, t0 + (k + 2) * beat / 2, rng.integers(55, 85))
    else:  # offbeat comping
        for k in (1, 3, 5, 7):
            for p in right:
                piano.add(p, t0 + k * beat / 2, t0 + (k + 0.8) * beat / 2, rng.integers(55, 85))
