"""Pieces of music21's bundled corpus (quartets, madrigals, masses, folk tunes, piano music) mapped to four stems.

Collections (file paths under ``music21/corpus``; analysis files such as ``.rntxt`` are skipped, and so are the
Bach chorales, which :mod:`mgdm_audio.audio.data.chorales` maps): ``quartets`` (Haydn, Mozart, Beethoven),
``palestrina``, ``monteverdi``, ``trecento``, ``folk`` (Ryan's Mammoth Collection, one tune per file) and ``misc``
(the other composers' single works). A track first draws a collection uniformly, then a piece, so the 1318
Palestrina files do not dominate.

Mapping (per track, all draws from ``numpy.random.default_rng([seed, SALT])``): the parts are sorted by mean pitch.

* bass <- the lowest note at every onset of the lowest part, an octave down, folded into E1..G3 (MIDI 28-55);
* piano <- the highest part (and, with probability 1/2 when there are 4 or more parts, the second highest);
* guitar <- a middle part, or (probability 1/2, and always for one- and two-part pieces) a strum on every beat of
  the pitch classes sounding in the lower parts, voiced from C3 with a low root from E2;
* one-part pieces (folk tunes): the tune goes to piano (or, with probability 0.3, guitar, the piano then plays the
  chords); one triad of the key's I, IV, V, vi per bar, the one sharing most pitch classes with the bar's notes,
  gives the bass roots and the strum;
* drums <- :func:`mgdm_audio.audio.data.procedural.add_drum_bar` in the piece's meter, one style per track.

Variation: tempo ~ U(70, 150) quarter notes per minute; a transposition ~ U{-5..6} semitones; each of the guitar
and piano parts moved by an octave up or down with probability 1/4 (kept inside their ranges); an excerpt of at
most ``seconds`` starting on a random bar line after every part has entered (when the piece leaves room; imitative
polyphony often brings its voices in one by one). Splits hold out whole works: a work (a file, or a multi-movement
folder) goes to ``validation`` when SHA-256(work) mod 100 falls in [80, 90), to ``test`` in [90, 100). The content
key of a track is ``corpus:<work>``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mgdm_audio.audio.data.procedural import STYLES, Song, draw_stems, fold
from mgdm_audio.audio.data.scores import drum_track, into_range, part_notes, strum_beats
from mgdm_audio.core.errors import UserInputError

SALT = 0xC0A9
CORPUS_SETS: tuple[str, ...] = ("train", "validation", "test", "all")
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "quartets": ("haydn", "mozart", "beethoven"),
    "palestrina": ("palestrina",),
    "monteverdi": ("monteverdi",),
    "trecento": ("trecento",),
    "folk": ("ryansMammoth",),
    "misc": (
        "schumann_robert", "schumann_clara", "joplin", "chopin", "corelli", "handel", "schubert", "beach", "verdi",
        "weber", "luca", "ciconia", "cpebach", "lusitano", "johnson_j_r", "liliuokalani", "airdsAirs",
    ),
}  # fmt: skip
SCORE_SUFFIXES = (".mxl", ".xml", ".krn", ".abc", ".musicxml")
MAX_PARSE_ATTEMPTS = 8


@dataclass(frozen=True)
class CorpusPiece:
    """One corpus file: its path relative to music21's corpus folder, its collection and its work."""

    path: str
    collection: str

    @property
    def work(self) -> str:
        """The work a file belongs to: the folder for ``.../movementN`` files, else the file without suffix."""
        stem = self.path.rsplit(".", 1)[0]
        return stem.rsplit("/", 1)[0] if "/movement" in stem else stem

    @property
    def content_key(self) -> str:
        return f"corpus:{self.work}"


def work_set(work: str) -> str:
    """``train``, ``validation`` or ``test`` for a work (a stable hash of its name)."""
    bucket = int(hashlib.sha256(work.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


@functools.lru_cache(maxsize=8)
def corpus_pieces(which: str = "train") -> dict[str, tuple[CorpusPiece, ...]]:
    """The pieces of each collection in the ``which`` set (``all``: every set), sorted by path."""
    if which not in CORPUS_SETS:
        raise UserInputError(f"corpus_set must be one of {', '.join(CORPUS_SETS)}, got {which!r}.")
    try:
        from music21 import corpus
    except ImportError as err:
        raise UserInputError("The corpus source needs music21; install it with `pip install music21`.") from err
    out = {}
    for collection, composers in COLLECTIONS.items():
        pieces = []
        for composer in composers:
            for path in corpus.getComposer(composer):
                relative = str(path).split("/corpus/", 1)[1]
                if not relative.endswith(SCORE_SUFFIXES):
                    continue
                piece = CorpusPiece(relative, collection)
                if which == "all" or work_set(piece.work) == which:
                    pieces.append(piece)
        out[collection] = tuple(sorted(pieces, key=lambda p: p.path))
    return {k: v for k, v in out.items() if v}


def draw_piece(which: str, rng: np.random.Generator) -> CorpusPiece:
    """A collection uniformly, then one of its pieces uniformly."""
    pieces = corpus_pieces(which)
    names = sorted(pieces)
    collection = names[int(rng.integers(len(names)))]
    return pieces[collection][int(rng.integers(len(pieces[collection])))]


CACHE_DIR = Path(os.environ.get("MGDM_AUDIO_CORPUS_CACHE", "~/.cache/mgdm_audio/corpus")).expanduser()


@functools.lru_cache(maxsize=64)
def piece_notes(path: str) -> dict:
    """The parsed piece as plain data: ``parts`` (lists of ``[start_q, end_q, midi]``), ``bar_q`` (quarters per
    bar, from the first time signature, 4 if none or odd), ``tonic`` (pitch class) and ``minor`` (music21's key
    analysis). Parsing a quartet movement takes seconds, so the result is kept as JSON under ``CACHE_DIR``
    (``MGDM_AUDIO_CORPUS_CACHE``), keyed by the path and the music21 version."""
    import music21
    from music21 import corpus

    name = hashlib.sha256(f"{path}|{music21.__version__}".encode()).hexdigest()[:24]
    cached = CACHE_DIR / f"{name}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    score = corpus.parse(path).stripTies()
    parts = [notes for notes in (_sounding_notes(p) for p in score.parts) if notes]
    if not parts:
        parts = [notes for notes in [_sounding_notes(score)] if notes]
    signatures = list(score.recurse().getElementsByClass("TimeSignature"))
    bar_q = float(signatures[0].barDuration.quarterLength) if signatures else 4.0
    key = score.analyze("key") if len(parts) == 1 else None
    data = {
        "parts": parts,
        "bar_q": bar_q if 1.0 <= bar_q <= 8.0 else 4.0,
        "tonic": int(key.tonic.pitchClass) if key is not None else 0,
        "minor": bool(key is not None and key.mode == "minor"),
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, suffix=".partial")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, cached)
    return data


def _sounding_notes(part) -> list[list]:
    """``[start_q, end_q, midi]`` (JSON lists) of every sounding pitch of a part: :func:`part_notes` without the
    zero-length (grace) notes."""
    return [[start, end, pitch] for start, end, pitch in part_notes(part) if end > start]


def _lowest_line(notes: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The lowest pitch at every onset."""
    lowest: dict[float, tuple[float, float, int]] = {}
    for start, end, pitch in notes:
        if start not in lowest or pitch < lowest[start][2]:
            lowest[start] = (start, end, pitch)
    return [lowest[s] for s in sorted(lowest)]


def _octave_shift(notes: list[tuple[float, float, int]], shift: int, low: int, high: int) -> int:
    """``shift`` if every pitch stays in [low, high] after it, else 0."""
    if not notes or shift == 0:
        return 0
    pitches = [p for _, _, p in notes]
    return shift if min(pitches) + shift >= low and max(pitches) + shift <= high else 0


def _bar_chords(notes: list[tuple[float, float, int]], tonic: int, minor: bool, bar_q: float, bars: int) -> list:
    """One triad per bar from the key's I, IV, V, vi (minor: i, iv, V, VI), the best overlap with the bar's notes."""
    major_triads = [(0, 4, 7), (5, 9, 12), (7, 11, 14), (9, 12, 16)]
    triads = [(0, 3, 7), (5, 8, 12), (7, 11, 14), (8, 12, 15)] if minor else major_triads
    chords = []
    for b in range(bars):
        classes = [p % 12 for s, e, p in notes if s < (b + 1) * bar_q and e > b * bar_q]
        scores = [sum(((c - tonic) % 12) in {x % 12 for x in triad} for c in classes) for triad in triads]
        best = triads[int(np.argmax(scores))] if classes else triads[0]
        chords.append([tonic + x for x in best])
    return chords


def corpus_song(which: str, seed: int, seconds: float, piece: CorpusPiece | None = None) -> Song:
    """Draw a piece of the ``which`` set (or use ``piece``: tests) and map an excerpt of at most ``seconds`` to four
    stems (see the module docstring)."""
    rng = np.random.default_rng([seed, SALT])
    given = piece
    for _ in range(MAX_PARSE_ATTEMPTS):
        drawn = draw_piece(which, rng)
        piece = given or drawn
        try:
            data = piece_notes(piece.path)
        except Exception:  # noqa: BLE001 (music21 raises many types on files it cannot read; draw another piece)
            continue
        parts = [[tuple(n) for n in notes] for notes in data["parts"]]
        if parts and max(end for notes in parts for _, end, _ in notes) >= 8.0:
            break
    else:
        raise UserInputError(f"No readable corpus piece after {MAX_PARSE_ATTEMPTS} draws (seed {seed}).")
    parts.sort(key=lambda notes: float(np.mean([p for _, _, p in notes])))
    transpose = int(rng.integers(-5, 7))
    tempo = float(rng.uniform(70.0, 150.0))
    beat = 60.0 / tempo
    bar_q = float(data["bar_q"])
    beats_per_bar = max(2, min(int(round(bar_q)), 6))
    total_q = max(end for notes in parts for _, end, _ in notes)
    bars_total = int(np.ceil(total_q / bar_q))
    excerpt_bars = int(np.ceil(seconds / (bar_q * beat)))
    entered = int(max(min(start for start, _, _ in notes) for notes in parts) // bar_q)  # every part has begun
    last_start = max(0, bars_total - excerpt_bars)
    first_bar = int(rng.integers(min(entered, last_start), last_start + 1))
    offset_q = first_bar * bar_q
    length_s = min(float(seconds), (total_q - offset_q) * beat)
    programs, stems, sink = draw_stems(rng, length_s)

    def add(name: str, notes, shift: int, velocity: tuple[int, int], legato: float = 1.0) -> None:
        for start, end, pitch in notes:
            if end <= offset_q or start >= offset_q + seconds / beat:
                continue
            t0, t1 = (start - offset_q) * beat, (end - offset_q) * beat
            sink[name].add(pitch + transpose + shift, t0, t0 + legato * (t1 - t0), rng.integers(*velocity))

    def strum(chord_at) -> None:  # chord_at(q): the pitch classes sounding at q quarters into the piece
        strum_beats(sink["guitar"], rng, length_s, beat, lambda k: chord_at(offset_q + k + 1e-3), transpose)

    shift = {name: 12 * int(rng.choice([-1, 0, 0, 0, 0, 0, 0, 1])) for name in ("guitar", "piano")}
    mode = "tune"
    if len(parts) == 1:
        tune = parts[0]
        tonic, minor = int(data["tonic"]), bool(data["minor"])
        chords = _bar_chords(tune, tonic, minor, bar_q, bars_total)
        melody = "guitar" if rng.random() < 0.3 else "piano"
        mode = f"tune_on_{melody}"
        add(melody, tune, _octave_shift(tune, shift[melody], 40 if melody == "guitar" else 36, 96), (65, 100))
        roots = [
            (b * bar_q, (b + 1) * bar_q, into_range(c[0] + transpose, 28, 40) - transpose) for b, c in enumerate(chords)
        ]
        add("bass", roots, 0, (80, 110), 0.9)
        if melody == "guitar":
            block = [(b * bar_q, (b + 1) * bar_q, fold(p, 55)) for b, c in enumerate(chords) for p in c]
            add("piano", block, 0, (55, 85))
        else:
            strum(lambda q: [p % 12 for p in chords[min(int(q // bar_q), len(chords) - 1)]])
    else:
        bass_line = [(s, e, into_range(p - 12 + transpose, 28, 55) - transpose) for s, e, p in _lowest_line(parts[0])]
        add("bass", bass_line, 0, (80, 110), 0.97)
        top = parts[-1] + (parts[-2] if len(parts) >= 4 and rng.random() < 0.5 else [])
        add("piano", top, _octave_shift(top, shift["piano"], 33, 100), (60, 90))
        middle = parts[len(parts) // 2] if len(parts) >= 3 else []
        if middle and rng.random() < 0.5:
            mode = "middle"
            add("guitar", middle, _octave_shift(middle, shift["guitar"], 40, 88), (70, 100))
        else:
            mode = "strum"
            lower = [n for notes in parts[:-1] for n in notes]
            strum(lambda q: sorted({p % 12 for s, e, p in lower if s <= q < e}))
    drum_style = str(rng.choice(STYLES["drums"]))
    bar_s = bar_q * beat
    drum_track(sink["drums"], rng, drum_style, length_s, bar_s, bar_s / beats_per_bar, beats_per_bar, 0.4)

    metadata = {
        "source": "corpus",
        "seed": int(seed),
        "piece": piece.path,
        "collection": piece.collection,
        "work": piece.work,
        "parts": len(parts),
        "tempo_bpm": round(tempo, 4),
        "transpose": transpose,
        "octave_shift": shift,
        "excerpt_start_quarters": offset_q,
        "styles": {"guitar": mode, "drums": drum_style},
        "programs": {**programs, "drums": 0},
        "content_key": piece.content_key,
    }
    return Song(stems, length_s, piece.content_key, metadata)
