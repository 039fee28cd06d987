"""What the two music21 sources (:mod:`~mgdm_audio.audio.data.chorales`, :mod:`~mgdm_audio.audio.data.corpus`)
share when they map a score to the four stems: the notes of a music21 part, octave moves into a range, the guitar
strum on every beat and the drum track.

* :func:`part_notes`: ``(start_q, end_q, midi)`` in quarter notes for every sounding pitch (chord members too);
* :func:`into_range`: ``pitch + 12 n`` inside ``[low, high]``;
* :func:`strum_beats`: on beat ``k`` (``t_k = k * beat``) the pitch classes ``C_k`` (sorted) are voiced from C3
  (``fold(c, 48)``) with a low root ``fold(C_k[0], 40)`` from E2, each string 12 ms after the one below, held to
  ``(k + 0.95) * beat``;
* :func:`drum_track`: :func:`~mgdm_audio.audio.data.procedural.add_drum_bar` bar after bar, a fill on a 4th bar
  with the given probability, a crash every 8 bars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mgdm_audio.audio.data.procedural import NoteSink, add_drum_bar, fold


def part_notes(part: Any) -> list[tuple[float, float, int]]:
    """``(start_q, end_q, midi)`` of every note (chord members too) of a music21 part or score, in quarter notes;
    zero-length notes (grace notes) are kept."""
    from music21 import chord, note

    out: list[tuple[float, float, int]] = []
    for element in part.flatten().notes:
        start, end = float(element.offset), float(element.offset + element.quarterLength)
        if isinstance(element, note.Note):
            out.append((start, end, int(element.pitch.midi)))
        elif isinstance(element, chord.Chord):
            out.extend((start, end, int(p.midi)) for p in element.pitches)
    return out


def into_range(pitch: int, low: int, high: int) -> int:
    """``pitch`` moved by octaves into ``[low, high]`` (``high - low >= 11``)."""
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return pitch


def strum_beats(
    guitar: NoteSink,
    rng: np.random.Generator,
    seconds: float,
    beat: float,
    classes_on_beat: Callable[[int], Sequence[int]],
    transpose: int = 0,
) -> None:
    """A strum on every beat ``k`` of ``seconds`` of the pitch classes ``classes_on_beat(k)`` (sorted; none: a rest),
    moved by ``transpose`` semitones; velocities ~ U{65..94}."""
    for k in range(int(np.ceil(seconds / beat))):
        classes = classes_on_beat(k)
        if not classes:
            continue
        voicing = sorted({fold(pc + transpose, 48) for pc in classes} | {fold(classes[0] + transpose, 40)})
        for i, pitch in enumerate(voicing):
            guitar.add(pitch, k * beat + 0.012 * i, (k + 0.95) * beat, rng.integers(65, 95))


def drum_track(
    drums: NoteSink,
    rng: np.random.Generator,
    style: str,
    seconds: float,
    bar_s: float,
    beat: float,
    beats_per_bar: int,
    fill_probability: float,
) -> None:
    """Drum bars of ``style`` (``beats_per_bar`` beats of ``beat`` seconds, one every ``bar_s``) over ``seconds``."""
    for b in range(int(np.ceil(seconds / bar_s))):
        fill = b % 4 == 3 and rng.random() < fill_probability
        add_drum_bar(drums, rng, style, b * bar_s, beat, beats_per_bar, fill, crash=b % 8 == 0)
