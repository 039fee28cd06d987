"""Build Slakh-layout datasets from procedural songs, Bach chorales or music21's corpus: splits, recipes, workers.

Content sources: ``procedural``, ``chorales``, ``corpus`` (:mod:`mgdm_audio.audio.data.corpus`) and ``mixed``
(each track draws one of these with the split's ``content`` weights, from ``default_rng([seed, MIXED_SALT])``).
Timbre: one soundfont for every stem (``soundfont``/``renderer``, the original route), or ``timbres``, a list of
timbre sources per stem (:mod:`mgdm_audio.audio.data.timbres`) from which each track draws one per stem.

Layout of a split: ``OUT/SPLIT/TrackNNNNN/{bass,drums,guitar,piano}.flac``, ``mix.flac`` (mono 16-bit FLAC, the mix
is the integer sum of the written stems) and ``metadata.json`` (programs, tempo, key, styles, progression or
chorale, seed, content key, soundfont path and SHA-256, sample rate, renderer, gain, per-stem RMS, package version).

Every file is written under a temporary name in the track folder and renamed; ``metadata.json`` is written last,
so a track folder is complete exactly when it has ``metadata.json``. With ``skip_existing`` a rerun renders only
the tracks without it (and removes temporary files an interrupted run left behind). Track ``i`` of a split is drawn
from seed ``split.seed + i`` alone, so the same seed gives byte-identical files whatever the number of workers.

Workers: a process pool whose initializer builds one renderer (soundfont loaded once) per worker process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mgdm_audio.audio.data.procedural import STEM_NAMES, Song, check_choices, generate_song, song_content_key
from mgdm_audio.audio.data.synth import (
    StemRenderer,
    make_renderer,
    quantise_track,
    resolve_renderer,
    resolve_soundfont,
)
from mgdm_audio.core.atomic import file_sha256
from mgdm_audio.core.errors import UserInputError

SOURCES: tuple[str, ...] = ("procedural", "chorales", "corpus", "mixed")
MIXED_SALT = 0x3A1
CHORALE_TITLE_SETS: tuple[str, ...] = ("train", "held_out", "all")
TMP_MARK = ".partial"
DEFAULT_SAMPLE_RATE = 22050


@dataclass
class SplitSpec:
    """One split to render: what content, how many tracks, and with which soundfont and renderer.

    ``progressions``/``styles`` restrict the procedural choices (None: all); ``chorale_titles`` picks the chorale
    pieces (``held_out``: titles reserved for tests, ``train``: the others, ``all``); ``seconds`` is the track length
    (chorales: the longest, a piece shorter than that keeps its own length; None: whole pieces). ``corpus_set``
    picks the music21 corpus works (``train``, ``validation``, ``test``, ``all``); ``content`` weighs the sources of
    a ``mixed`` split; ``timbres`` lists the timbre sources each stem is drawn from (None: ``soundfont`` for all).
    """

    name: str
    source: str = "procedural"
    tracks: int = 10
    seconds: float | None = 30.0
    seed: int = 0
    progressions: list[str] | None = None
    styles: dict[str, list[str]] | None = None
    chorale_titles: str = "train"
    soundfont: str | None = None
    renderer: str = "auto"
    corpus_set: str = "train"
    content: dict[str, float] | None = None
    timbres: dict[str, list[str]] | None = None

    def validate(self) -> None:
        """Raise :class:`UserInputError` naming the split and the bad field."""
        if self.source not in SOURCES:
            raise UserInputError(
                f"Unknown --source {self.source!r} for split {self.name!r}; choose one of {', '.join(SOURCES)}."
            )
        if self.tracks < 1:
            raise UserInputError(f"--tracks must be at least 1 for split {self.name!r}, got {self.tracks}.")
        if self.seconds is not None and self.seconds <= 0:
            raise UserInputError(f"--seconds must be positive for split {self.name!r}, got {self.seconds}.")
        if self.source in ("procedural", "corpus", "mixed") and self.seconds is None:
            raise UserInputError(f"Split {self.name!r}: {self.source} tracks need a length (--seconds).")
        if self.source == "mixed":
            weights = self.content or {}
            if not weights or set(weights) - {"procedural", "chorales", "corpus"} or min(weights.values()) < 0:
                raise UserInputError(
                    f"Split {self.name!r}: a mixed source needs `content: {{procedural|chorales|corpus: weight}}` "
                    f"with non-negative weights, got {self.content!r}."
                )
        if self.corpus_set not in ("train", "validation", "test", "all"):
            raise UserInputError(
                f"Split {self.name!r}: corpus_set must be train, validation, test or all, got {self.corpus_set!r}."
            )
        if self.timbres is not None:
            from mgdm_audio.audio.data.timbres import check_timbres

            check_timbres(self.timbres, f"Split {self.name!r}")
        if self.chorale_titles not in CHORALE_TITLE_SETS:
            raise UserInputError(
                f"Split {self.name!r}: chorale_titles must be one of {', '.join(CHORALE_TITLE_SETS)}, "
                f"got {self.chorale_titles!r}."
            )
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise UserInputError(f"Split name {self.name!r} must be a plain folder name.")
        check_choices(self.progressions, self.styles)


@dataclass
class Recipe:
    """A dataset recipe: the sample rate and the splits to render."""

    sample_rate: int = DEFAULT_SAMPLE_RATE
    splits: list[SplitSpec] = field(default_factory=list)


@dataclass
class SplitSummary:
    """What a :func:`render_split` call did."""

    name: str
    tracks: int
    rendered: int
    skipped: int
    audio_seconds: float
    renderer: str
    soundfont: str


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe YAML: ``sample_rate``, ``soundfont``, ``renderer`` defaults and ``splits: {name: {...}}``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"Recipe file {path} does not exist; pass an existing YAML file with --recipe.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserInputError(f"Recipe file {path} is not valid YAML: {err}.") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("splits"), dict) or not raw["splits"]:
        raise UserInputError(f"Recipe file {path} needs a non-empty mapping `splits: {{name: {{...}}}}`.")
    known = set(SplitSpec.__dataclass_fields__) - {"name"}
    defaults = {k: raw[k] for k in ("soundfont", "renderer") if k in raw}
    splits = []
    for name, fields in raw["splits"].items():
        unknown = set(fields or {}) - known
        if unknown:
            raise UserInputError(f"Recipe {path}: split {name!r} has unknown keys {sorted(unknown)}.")
        spec = SplitSpec(name=str(name), **{**defaults, **(fields or {})})
        spec.validate()
        splits.append(spec)
    return Recipe(sample_rate=int(raw.get("sample_rate", DEFAULT_SAMPLE_RATE)), splits=splits)


def track_source(spec: SplitSpec, index: int) -> str:
    """The content source of track ``index``: the split's, or for ``mixed`` one drawn with the content weights."""
    if spec.source != "mixed":
        return spec.source
    names = sorted(spec.content or {})
    weights = np.array([spec.content[n] for n in names], dtype=float)
    rng = np.random.default_rng([spec.seed + index, MIXED_SALT])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def make_song(spec: SplitSpec, index: int) -> Song:
    """The song of track ``index`` of ``spec`` (seed ``spec.seed + index``)."""
    seed = spec.seed + index
    source = track_source(spec, index)
    if source == "procedural":
        return generate_song(seed, float(spec.seconds), spec.progressions, spec.styles)
    if source == "corpus":
        from mgdm_audio.audio.data.corpus import corpus_song

        return corpus_song(spec.corpus_set, seed, float(spec.seconds))
    from mgdm_audio.audio.data.chorales import chorale_pieces, chorale_song

    pieces = chorale_pieces(spec.chorale_titles)
    if spec.source == "mixed":
        piece = pieces[int(np.random.default_rng([seed, MIXED_SALT, 1]).integers(len(pieces)))]
        return chorale_song(piece, seed, spec.seconds)
    return chorale_song(pieces[index], seed, spec.seconds)


def split_content_keys(spec: SplitSpec) -> set[str]:
    """The content keys of every track of ``spec`` (procedural: the progression and style draws; chorales: titles;
    corpus and mixed splits: every key their piece sets can give, a superset)."""
    if spec.source == "chorales":
        from mgdm_audio.audio.data.chorales import chorale_pieces

        return {piece.content_key for piece in chorale_pieces(spec.chorale_titles)[: spec.tracks]}
    sources = {track_source(spec, i) for i in range(spec.tracks)} if spec.source == "mixed" else {spec.source}
    keys: set[str] = set()
    if "procedural" in sources:
        keys |= {song_content_key(spec.seed + i, spec.progressions, spec.styles) for i in range(spec.tracks)}
    if "corpus" in sources:
        from mgdm_audio.audio.data.corpus import corpus_pieces

        keys |= {p.content_key for pieces in corpus_pieces(spec.corpus_set).values() for p in pieces}
    if "chorales" in sources:
        from mgdm_audio.audio.data.chorales import chorale_pieces

        keys |= {piece.content_key for piece in chorale_pieces(spec.chorale_titles)}
    return keys


def check_disjoint(recipe: Recipe) -> dict[str, int]:
    """Raise :class:`UserInputError` when a test split (name starting with ``test``) shares a content key with a
    non-test split; returns the number of distinct content keys per split."""
    keys = {spec.name: split_content_keys(spec) for spec in recipe.splits}
    train = set().union(*[k for name, k in keys.items() if not name.startswith("test")])
    for name, test_keys in keys.items():
        if name.startswith("test") and test_keys & train:
            shared = sorted(test_keys & train)
            raise UserInputError(f"Split {name!r} shares {len(shared)} content keys with train (e.g. {shared[0]!r}).")
    return {name: len(k) for name, k in keys.items()}


def _readable_by_umask(path: str) -> None:
    """Give a ``mkstemp`` file (mode 0600) the mode a plain ``open`` would have given it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _write_flac_atomic(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    import soundfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_MARK, dir=path.parent)
    os.close(fd)
    try:
        soundfile.write(tmp, samples, sample_rate, format="FLAC", subtype="PCM_16")
        _readable_by_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json_atomic(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_MARK, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
            f.write("\n")
        _readable_by_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_track(
    renderer: StemRenderer, spec: SplitSpec, index: int, track_dir: Path, sample_rate: int, context: dict
) -> float:
    """Render, quantise and write one track (stems, mix, then metadata.json); returns its length in seconds."""
    from mgdm_audio import __version__

    song = make_song(spec, index)
    track_dir.mkdir(parents=True, exist_ok=True)
    for leftover in track_dir.glob(f".*{TMP_MARK}"):
        leftover.unlink(missing_ok=True)
    timbres = None
    if spec.timbres is not None:
        from mgdm_audio.audio.data.timbres import draw_timbres

        seed = spec.seed + index
        choices = draw_timbres(spec.timbres, song, seed)
        audio = {
            name: renderer.render(song.stems[name], song.seconds, choices[name], 4 * seed + k)
            for k, name in enumerate(STEM_NAMES)
        }
        timbres = {name: choices[name].describe() for name in STEM_NAMES}
        song.metadata["programs"] = {name: choices[name].program for name in STEM_NAMES}
    else:
        audio = {name: renderer.render(song.stems[name], song.seconds) for name in STEM_NAMES}
    stems, mix, gain = quantise_track(audio)
    for name in STEM_NAMES:
        _write_flac_atomic(track_dir / f"{name}.flac", stems[name], sample_rate)
    _write_flac_atomic(track_dir / "mix.flac", mix, sample_rate)
    rms = {name: float(np.sqrt(np.mean((stems[name] / 32768.0) ** 2))) for name in STEM_NAMES}
    metadata = {
        **song.metadata,
        "track": track_dir.name,
        "split": spec.name,
        "seconds": song.seconds,
        "samples": int(mix.shape[0]),
        "sample_rate": sample_rate,
        "stems": list(STEM_NAMES),
        "gain": gain,
        "rms_dbfs": {name: round(20 * float(np.log10(v + 1e-12)), 3) for name, v in rms.items()},
        "renderer": renderer.name if timbres is None else f"timbres ({renderer.backend})",
        "soundfont": context["soundfont"],
        "timbres": timbres,
        "package": f"mgdm_audio {__version__}",
    }
    _write_json_atomic(track_dir / "metadata.json", metadata)
    return song.seconds


_WORKER: dict = {}


def _init_worker(renderer_name: str, soundfont: str | None, sample_rate: int) -> None:
    if soundfont is None:
        from mgdm_audio.audio.data.timbres import TimbreBank

        _WORKER["renderer"] = TimbreBank(sample_rate, renderer_name)
    else:
        _WORKER["renderer"] = make_renderer(renderer_name, Path(soundfont), sample_rate)


def _render_job(job: tuple[dict, int, str, int, dict]) -> tuple[int, float]:
    spec_fields, index, track_dir, sample_rate, context = job
    seconds = render_track(_WORKER["renderer"], SplitSpec(**spec_fields), index, Path(track_dir), sample_rate, context)
    return index, seconds


def track_name(index: int) -> str:
    """Slakh's folder name for track ``index``: ``Track00000``."""
    return f"Track{index:05d}"


def render_split(
    out_root: str | Path,
    spec: SplitSpec,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    workers: int = 1,
    skip_existing: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> SplitSummary:
    """Render the tracks of ``spec`` missing under ``out_root/spec.name`` (all of them when not ``skip_existing``)."""
    spec.validate()
    if workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {workers}.")
    if sample_rate < 8000:
        raise UserInputError(f"--sample-rate must be at least 8000 Hz, got {sample_rate}.")
    renderer_name = resolve_renderer(spec.renderer)
    soundfont: Path | None = None
    if spec.timbres is None:
        soundfont = resolve_soundfont(spec.soundfont)
    else:
        from mgdm_audio.audio.data.timbres import check_installed

        check_installed(spec.timbres, f"Split {spec.name!r}")
    if spec.source == "chorales":
        from mgdm_audio.audio.data.chorales import chorale_pieces

        available = len(chorale_pieces(spec.chorale_titles))
        if spec.tracks > available:
            raise UserInputError(
                f"Split {spec.name!r} asks for {spec.tracks} chorales but the {spec.chorale_titles!r} titles have "
                f"{available} pieces; lower --tracks."
            )
    split_dir = Path(out_root) / spec.name
    split_dir.mkdir(parents=True, exist_ok=True)
    todo = [
        i for i in range(spec.tracks) if not (skip_existing and (split_dir / track_name(i) / "metadata.json").is_file())
    ]
    context = {"soundfont": {"path": str(soundfont), "sha256": file_sha256(soundfont)} if soundfont else None}
    jobs = [(asdict(spec), i, str(split_dir / track_name(i)), sample_rate, context) for i in todo]
    audio_seconds = 0.0
    if jobs:
        audio_seconds = sum(_run_jobs(jobs, renderer_name, soundfont, sample_rate, workers, progress, spec.name))
    timbre = (
        soundfont.name if soundfont else "timbres " + ",".join(sorted({n for v in spec.timbres.values() for n in v}))
    )
    summary = SplitSummary(
        spec.name, spec.tracks, len(todo), spec.tracks - len(todo), audio_seconds, renderer_name, timbre
    )
    if log is not None:
        log(
            f"{spec.name}: {summary.rendered} tracks rendered ({audio_seconds / 3600:.3f} h), "
            f"{summary.skipped} already complete; {renderer_name} with {timbre}"
        )
    return summary


def _run_jobs(
    jobs: list, renderer_name: str, soundfont: Path | None, sample_rate: int, workers: int, progress: bool, label: str
) -> Iterable[float]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=label, unit="track", disable=not progress)
    seconds = []
    try:
        if workers == 1:
            _init_worker(renderer_name, str(soundfont) if soundfont else None, sample_rate)
            for job in jobs:
                seconds.append(_render_job(job)[1])
                bar.update()
            return seconds
        context = multiprocessing.get_context("spawn")
        with context.Pool(
            workers,
            initializer=_init_worker,
            initargs=(renderer_name, str(soundfont) if soundfont else None, sample_rate),
        ) as pool:
            for _, length in pool.imap_unordered(_render_job, jobs):
                seconds.append(length)
                bar.update()
        return seconds
    finally:
        bar.close()
