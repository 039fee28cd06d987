"""Bach chorales from music21's bundled corpus mapped to the four stems (drums generated).

music21's wheel holds 371 chorales (``corpus.chorales.Iterator``), all SATB (20 also have instrument parts; the
voices are picked by part name). Mapping, per piece, with tempo ~ U(70, 110) bpm and GM programs drawn from each
Slakh class:

* bass   <- the Bass voice an octave down, folded into E1..G3 (MIDI 28-55);
* guitar <- the Tenor line, or (probability 1/2) a strum on every beat of the pitch classes sounding in A/T/B,
  voiced from C3 with a low root from E2;
* piano  <- Soprano + Alto;
* drums  <- :func:`mgdm_audio.audio.data.procedural.add_drum_bar` (rock style) in the piece's meter, with a fill on
  some 4th bars and a crash every 8 bars.

Many chorale melodies occur in several harmonisations (e.g. BWV 86.6 and BWV 153.x), so the train/test split is
made by melody *title* (music21's ``ChoraleListRKBWV``; 231 titles): a title is held out for tests when the first 8
hex digits of SHA-256(title) mod 100 < ``HELD_OUT_PERCENT``. The content key of a piece is ``chorale:<title>``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from mgdm_audio.audio.data.procedural import Song, draw_stems
from mgdm_audio.audio.data.scores import drum_track, into_range, part_notes, strum_beats
from mgdm_audio.core.errors import UserInputError

HELD_OUT_PERCENT = 20


@dataclass(frozen=True)
class ChoralePiece:
    """One chorale of music21's corpus: its corpus path (``bach/bwv269``), BWV number and melody title."""

    path: str
    bwv: str
    title: str

    @property
    def content_key(self) -> str:
        return f"chorale:{self.title}"


def title_is_held_out(title: str) -> bool:
    """Whether the melody ``title`` is reserved for test splits (a stable hash of the title)."""
    return int(hashlib.sha256(title.encode("utf-8")).hexdigest()[:8], 16) % 100 < HELD_OUT_PERCENT


@functools.lru_cache(maxsize=4)
def chorale_pieces(which: str = "all") -> tuple[ChoralePiece, ...]:
    """The corpus chorales in Riemenschneider order: ``train`` (titles not held out), ``held_out`` or ``all``."""
    try:
        from music21.corpus import chorales
    except ImportError as err:
        raise UserInputError("The chorales source needs music21; install it with `pip install music21`.") from err
    titles = chorales.ChoraleListRKBWV().byBWV
    pieces = []
    for path in chorales.Iterator(returnType="filename"):
        bwv = str(path).split("bwv", 1)[1]
        title = str(titles.get(bwv, {}).get("title", f"BWV {bwv}"))
        pieces.append(ChoralePiece(str(path), bwv, title))
    if which == "all":
        return tuple(pieces)
    held_out = which == "held_out"
    return tuple(p for p in pieces if title_is_held_out(p.title) == held_out)


def _voice_notes(part, seconds_per_quarter: float) -> list[tuple[float, float, int]]:
    """``(start_s, end_s, midi)`` of every note (chord members too) of a music21 part."""
    return [(s * seconds_per_quarter, e * seconds_per_quarter, p) for s, e, p in part_notes(part)]


def _satb_parts(score, piece: ChoralePiece):
    parts = list(score.parts)
    by_name = {}
    for voice in ("soprano", "alto", "tenor", "bass"):
        by_name[voice] = next((p for p in parts if voice in (p.partName or "").lower()), None)
    if all(by_name.values()):
        return by_name["soprano"], by_name["alto"], by_name["tenor"], by_name["bass"]
    if len(parts) == 4:
        return parts[0], parts[1], parts[2], parts[3]
    raise ValueError(f"{piece.path} is not a four-voice (SATB) chorale")


def chorale_song(piece: ChoralePiece, seed: int, max_seconds: float | None = None) -> Song:
    """Map ``piece`` to four stem scores; tempo, programs, guitar mode and velocities are drawn from ``seed``."""
    from music21 import corpus

    rng = np.random.default_rng([seed, 0xBAC4])
    score = corpus.parse(piece.path).stripTies()
    soprano, alto, tenor, bass_voice = _satb_parts(score, piece)
    tempo = float(rng.uniform(70.0, 110.0))
    beat = 60.0 / tempo
    seconds = float(score.highestTime) * beat
    if max_seconds is not None:
        seconds = min(seconds, float(max_seconds))
    programs, stems, sink = draw_stems(rng, seconds)

    for start, end, pitch in _voice_notes(bass_voice, beat):
        sink["bass"].add(into_range(pitch - 12, 28, 55), start, end - 0.03 * (end - start), rng.integers(80, 110))
    for voice in (soprano, alto):
        for start, end, pitch in _voice_notes(voice, beat):
            sink["piano"].add(pitch, start, end, rng.integers(60, 90))
    tenor_notes = _voice_notes(tenor, beat)
    guitar_mode = "tenor" if rng.random() < 0.5 else "strum"
    if guitar_mode == "tenor":
        for start, end, pitch in tenor_notes:
            sink["guitar"].add(pitch, start, end, rng.integers(70, 100))
    else:
        lower_voices = _voice_notes(alto, beat) + tenor_notes + _voice_notes(bass_voice, beat)
        strum_beats(
            sink["guitar"],
            rng,
            seconds,
            beat,
            lambda k: sorted({p % 12 for a, b, p in lower_voices if a <= k * beat + 1e-3 < b}),
        )

    signatures = list(score.recurse().getElementsByClass("TimeSignature"))
    beats_per_bar = int(signatures[0].numerator) if signatures and signatures[0].numerator in (2, 3, 4) else 4
    key_signatures = list(score.recurse().getElementsByClass("KeySignature"))
    drum_track(sink["drums"], rng, "rock", seconds, beats_per_bar * beat, beat, beats_per_bar, fill_probability=0.3)

    metadata = {
        "source": "chorales",
        "seed": int(seed),
        "piece": piece.path,
        "bwv": piece.bwv,
        "title": piece.title,
        "tempo_bpm": round(tempo, 4),
        "key_signature_sharps": int(key_signatures[0].sharps) if key_signatures else 0,
        "beats_per_bar": beats_per_bar,
        "styles": {"guitar": guitar_mode, "drums": "rock"},
        "programs": {**programs, "drums": 0},
        "content_key": piece.content_key,
    }
    return Song(stems, seconds, piece.content_key, metadata)
