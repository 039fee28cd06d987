"""Multi-stem dataset readers: Slakh-layout folders (ours, MSDM's, raw Slakh2100) and MUSDB18 / MUSDB18-HQ.

Both readers are ``torch.utils.data.Dataset`` objects whose items are float32 tensors ``(S, T)``: the stems
in the order given by ``stems``, mono, at ``sample_rate``, ``T = chunk_samples``.

Chunking (MSDM: ``main/data.py`` of gladia-research-group/multi-source-diffusion-models)
-------------------------------------------------------------------------------------
* ``mode="random"`` (training): ``len = floor(sum of track lengths / chunk)``. Item ``i`` draws a shift
  ``u`` uniformly from ``[-chunk//2, chunk - chunk//2)`` with a generator seeded by ``(seed, epoch, i)``; the
  midpoint ``m = i*chunk + chunk//2 + u`` (in the concatenation of all tracks) picks the track holding it, and
  the crop ``[m - chunk//2, m - chunk//2 + chunk)`` is pulled back inside that track, so crops never cross
  track boundaries. A track shorter than one chunk gives its whole length followed by zeros.
  Call :meth:`set_epoch` each epoch for new crops; the same ``(seed, epoch, i)`` always gives the same crop.
* ``mode="sequential"`` (evaluation): chunks start at ``0, hop, 2*hop, ...`` inside each track in order
  (``hop_samples`` defaults to ``chunk_samples``: MSDM's non-overlapping chunks); the trailing partial chunk
  is dropped unless ``keep_partial=True`` (then it is zero-padded). ``chunk_index[i] = (track name, start)``.
* Active-stem filter (sequential mode): a stem is *active* in a chunk when its RMS over the chunk
  (of the returned, gain-scaled audio) exceeds ``10 ** (silence_db / 20)``, i.e.
  ``20 * log10(rms) > silence_db``; a chunk is kept when at least ``min_active_stems`` stems are active
  (``0`` keeps all: MSDM's chunk level; ``2`` is MSDM's "at least two active stems" rule, which MSDM applies to
  4 s scoring windows with ``||s||_2 / N < 1.5e-5`` = RMS below -47.0 dBFS for 4 s at 22050 Hz, so
  ``silence_db=-47.0`` reproduces it for that window length).

Reading
-------
* A stem with no file is silence (zeros), as in MSDM. Stems of one track whose lengths differ (after
  resampling) are trimmed to the shortest, with a ``warnings.warn`` naming the track.
* Files at another sample rate are resampled (windowed sinc, :func:`mgdm_audio.audio.io.resample`); only the
  needed range is read. Multi-channel files are averaged to mono.
* ``gain`` multiplies every stem (1.0 = file scale). MSDM's training loader (PyAV stereo upmix then mean)
  scaled stems by 1/sqrt(2) = 0.7071 while its evaluation used file scale; pass ``gain=2 ** -0.5`` to
  reproduce its training data exactly.
* ``in_memory=True`` decodes every track once at construction.

Slakh layouts (``layout="auto"`` detects per track; or force ``"ours" | "msdm" | "slakh2100"``)
------------------------------------------------------------------------------------------
* ``ours``: ``ROOT/SPLIT/TrackNNNNN/{stem}.flac`` (or ``.wav``), with ``mix.flac`` and ``metadata.json``.
* ``msdm``: MSDM's pre-made 4-stem folders ``ROOT/SPLIT/TrackNNNNN/{stem}.wav`` (22050 Hz, 16-bit mono).
* ``slakh2100``: raw Slakh2100 ``ROOT/SPLIT/TrackNNNNN/stems/Sxx.flac`` + ``metadata.yaml``. Each ``Sxx`` entry
  with ``audio_rendered`` true is assigned by ``inst_class`` (Bass -> bass, Drums -> drums, Guitar -> guitar,
  Piano -> piano; ``is_drum: true`` -> drums whatever the class); other classes are ignored and several
  Sxx of one class are summed. (MSDM's own mapping script is unpublished; this is the ``inst_class``
  equivalent of the "band" submix of ethman/slakh-utils.)
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from mgdm_audio.audio.io import audio_info, read_segment
from mgdm_audio.core.errors import UserInputError

__all__ = [
    "SLAKH_CLASS_TO_STEM",
    "SLAKH_LAYOUTS",
    "ChunkOptions",
    "MusdbDataset",
    "SlakhDataset",
    "StemSource",
    "TrackEntry",
]

SLAKH_LAYOUTS = ("auto", "ours", "msdm", "slakh2100")
#: raw Slakh2100 ``inst_class`` -> our stem name (classes not listed are ignored)
SLAKH_CLASS_TO_STEM = {"Bass": "bass", "Drums": "drums", "Guitar": "guitar", "Piano": "piano"}
_AUDIO_SUFFIXES = (".flac", ".wav")
_HQ_SUFFIXES = (".wav", ".flac")  # MUSDB18-HQ ships wav


@dataclass(frozen=True)
class StemSource:
    """One audio file feeding a stem (a stem may be the sum of several, e.g. two Slakh guitar tracks)."""

    path: Path
    sample_rate: int
    frames: int

    def length_at(self, sample_rate: int) -> int:
        """Its length in samples after resampling to ``sample_rate``: ``ceil(frames * sr / sr_file)``."""
        return math.ceil(self.frames * sample_rate / self.sample_rate)


@dataclass(frozen=True)
class TrackEntry:
    """A track: per-stem source files (empty tuple = silent stem), common length at the dataset rate, mixture."""

    name: str
    folder: Path
    sources: tuple[tuple[StemSource, ...], ...]
    length: int
    mixture: StemSource | None = None
    layout: str = ""


def _source(path: Path) -> StemSource:
    info = audio_info(path)
    if info.frames <= 0:
        raise UserInputError(
            f"Audio file {path} has zero length; re-export it or delete it (a missing stem is silence)."
        )
    return StemSource(path, info.sample_rate, info.frames)


def _make_track(
    name: str,
    folder: Path,
    sources: list[list[StemSource]],
    sample_rate: int,
    mixture: StemSource | None,
    layout: str,
) -> TrackEntry | None:
    lengths = {src.path.name: src.length_at(sample_rate) for group in sources for src in group}
    if not lengths:
        return None
    length = min(lengths.values())
    if max(lengths.values()) != length:
        warnings.warn(
            f"Track {name} ({folder}): stem lengths differ {sorted(set(lengths.values()))} samples at "
            f"{sample_rate} Hz; trimming all stems to the shortest ({length}).",
            stacklevel=3,
        )
    return TrackEntry(name, folder, tuple(tuple(g) for g in sources), length, mixture, layout)


class ChunkOptions(TypedDict, total=False):
    """Keyword options that both readers take with the same meaning and default (the rules are in the module
    docstring; the defaults are those of :class:`_StemChunkDataset`)."""

    hop_samples: int | None
    seed: int
    in_memory: bool
    min_active_stems: int
    silence_db: float
    gain: float
    keep_partial: bool


class _StemChunkDataset(Dataset):
    """Shared chunking over a list of :class:`TrackEntry` (see the module docstring for the rules)."""

    def __init__(
        self,
        tracks: list[TrackEntry],
        stems: Sequence[str],
        *,
        sample_rate: int,
        chunk_samples: int,
        mode: str,
        where: str,
        hop_samples: int | None = None,
        seed: int = 0,
        in_memory: bool = False,
        min_active_stems: int = 0,
        silence_db: float = -60.0,
        gain: float = 1.0,
        keep_partial: bool = False,
    ) -> None:
        if mode not in ("random", "sequential"):
            raise UserInputError(f"mode must be 'random' or 'sequential', got {mode!r}.")
        if chunk_samples < 1:
            raise UserInputError(f"chunk_samples must be at least 1, got {chunk_samples}.")
        hop = chunk_samples if hop_samples is None else int(hop_samples)
        if hop < 1:
            raise UserInputError(f"hop_samples must be at least 1, got {hop_samples}.")
        if not 0 <= min_active_stems <= len(stems):
            raise UserInputError(f"min_active_stems must be in [0, {len(stems)}], got {min_active_stems}.")
        self.tracks = tracks
        self.stems = tuple(stems)
        self.sample_rate = int(sample_rate)
        self.chunk_samples = int(chunk_samples)
        self.hop_samples = hop
        self.mode = mode
        self.seed = int(seed)
        self.epoch = 0
        self.min_active_stems = int(min_active_stems)
        self.silence_db = float(silence_db)
        self.gain = float(gain)
        self.keep_partial = bool(keep_partial)
        self._cache: list[torch.Tensor] | None = None
        if in_memory:
            self._cache = [self._load_full(t) for t in range(len(tracks))]
        ends = np.cumsum([t.length for t in tracks], dtype=np.int64)
        self._track_ends = ends
        self.total_samples = int(ends[-1]) if len(ends) else 0
        self.chunk_index: list[tuple[str, int]] = []
        self._chunk_tracks: list[int] = []
        if mode == "random":
            if self.total_samples < self.chunk_samples:
                raise UserInputError(
                    f"{where} holds {self.total_samples} samples at {self.sample_rate} Hz, less than one chunk "
                    f"({self.chunk_samples}); use a smaller chunk_samples or more tracks."
                )
        else:
            self._build_sequential_index()

    # ---------------------------------------------------------------- reading
    def _read_stems(self, track: int, start: int, stop: int) -> torch.Tensor:
        """Stems ``(S, stop - start)`` of a track at the dataset rate, mono, file scale, zeros outside."""
        if self._cache is not None:
            full = self._cache[track]
            out = full[:, max(0, start) : max(0, stop)]
            return torch.nn.functional.pad(out, (0, (stop - start) - out.shape[-1]))
        entry = self.tracks[track]
        out = torch.zeros(len(self.stems), stop - start)
        stop_in = min(stop, entry.length)
        if stop_in <= start:
            return out
        for k, group in enumerate(entry.sources):
            for src in group:
                seg = read_segment(src.path, start, stop_in, sample_rate=self.sample_rate, mono=True)
                out[k, : stop_in - start] += seg[0]
        return out

    def _load_full(self, track: int) -> torch.Tensor:
        return self._read_stems(track, 0, self.tracks[track].length)

    def load_track(self, track: int | str) -> torch.Tensor:
        """A whole track's stems ``(S, length)`` (gain applied), by index or name."""
        index = self._track_position(track)
        return self._read_stems(index, 0, self.tracks[index].length) * self.gain

    def load_mixture(self, track: int | str) -> torch.Tensor | None:
        """The track's provided mixture file ``(1, length)`` at the dataset rate (gain applied), or None."""
        entry = self.tracks[self._track_position(track)]
        if entry.mixture is None:
            return None
        wav = read_segment(entry.mixture.path, 0, entry.length, sample_rate=self.sample_rate, mono=True)
        return wav * self.gain

    def _track_position(self, track: int | str) -> int:
        if isinstance(track, str):
            for i, entry in enumerate(self.tracks):
                if entry.name == track:
                    return i
            raise UserInputError(f"No track named {track!r} in this dataset.")
        return int(track)

    @property
    def track_names(self) -> list[str]:
        """Track names in dataset order."""
        return [t.name for t in self.tracks]

    # ---------------------------------------------------------------- chunking
    def _build_sequential_index(self) -> None:
        threshold = 10.0 ** (self.silence_db / 20.0)
        chunk, hop = self.chunk_samples, self.hop_samples
        for t, entry in enumerate(self.tracks):
            starts = list(range(0, entry.length - chunk + 1, hop))
            if self.keep_partial:
                tail = starts[-1] + hop if starts else 0
                if tail < entry.length:
                    starts.append(tail)
            if not starts:
                continue
            if self.min_active_stems > 0:
                full = (self._cache[t] if self._cache is not None else self._load_full(t)) * self.gain
                kept = []
                for s in starts:
                    seg = full[:, s : s + chunk]
                    rms = seg.pow(2).sum(dim=-1).div(chunk).sqrt()
                    if int((rms > threshold).sum()) >= self.min_active_stems:
                        kept.append(s)
                starts = kept
            self.chunk_index.extend((entry.name, s) for s in starts)
            self._chunk_tracks.extend([t] * len(starts))

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of ``epoch`` (random mode); sequential chunks do not depend on it."""
        self.epoch = int(epoch)

    def crop_position(self, index: int) -> tuple[int, int]:
        """``(track index, start sample)`` of item ``index`` in the current epoch."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        if self.mode == "sequential":
            return self._chunk_tracks[index], self.chunk_index[index][1]
        chunk, half = self.chunk_samples, self.chunk_samples // 2
        rng = np.random.default_rng([self.seed, self.epoch, index])
        shift = int(rng.integers(-half, chunk - half))
        mid = min(index * chunk + half + shift, self.total_samples - 1)
        track = int(np.searchsorted(self._track_ends, mid, side="right"))
        track_start = int(self._track_ends[track]) - self.tracks[track].length
        start = mid - half - track_start
        start = max(0, min(start, self.tracks[track].length - chunk))
        return track, start

    def __len__(self) -> int:
        if self.mode == "sequential":
            return len(self.chunk_index)
        return self.total_samples // self.chunk_samples

    def __getitem__(self, index: int) -> torch.Tensor:
        track, start = self.crop_position(index)
        return self._read_stems(track, start, start + self.chunk_samples) * self.gain


# ======================================================================================== Slakh


def _check_dir(root: Path, what: str, hint: str) -> None:
    if not root.exists():
        raise UserInputError(f"{what} {root} does not exist; {hint}")
    if not root.is_dir():
        raise UserInputError(f"{what} {root} is not a folder; {hint}")


def _stem_file(folder: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
    for suffix in suffixes:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _folder_sources(
    folder: Path, stems: Sequence[str], stem_suffixes: Sequence[str], mix_name: str, mix_suffixes: Sequence[str]
) -> tuple[list[list[StemSource]], StemSource | None]:
    """Per-stem sources (``[]`` for a stem with no file) and the mixture file of a one-file-per-stem folder."""
    groups = []
    for stem in stems:
        path = _stem_file(folder, stem, stem_suffixes)
        groups.append([_source(path)] if path is not None else [])
    mix_path = _stem_file(folder, mix_name, mix_suffixes)
    return groups, (_source(mix_path) if mix_path is not None else None)


def _detect_layout(folder: Path, stems: Sequence[str]) -> str | None:
    if (folder / "stems").is_dir() and (folder / "metadata.yaml").is_file():
        return "slakh2100"
    if any((folder / f"{s}.flac").is_file() for s in stems) or (folder / "metadata.json").is_file():
        return "ours"
    if any((folder / f"{s}.wav").is_file() for s in stems):
        return "msdm"
    return None


def _read_slakh_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserInputError(
            f"{path} is not valid YAML ({type(err).__name__}); restore it from the Slakh2100 archive."
        ) from err
    if not isinstance(meta, dict) or not isinstance(meta.get("stems"), dict):
        raise UserInputError(f"{path} has no 'stems' mapping; it is not a Slakh2100 metadata.yaml.")
    return meta


def _raw_slakh_sources(folder: Path, stems: Sequence[str]) -> list[list[StemSource]]:
    meta_path = folder / "metadata.yaml"
    meta = _read_slakh_metadata(meta_path)
    audio_dir = folder / str(meta.get("audio_dir") or "stems")
    groups: list[list[StemSource]] = [[] for _ in stems]
    for key, entry in sorted(meta["stems"].items()):
        if not isinstance(entry, dict) or not entry.get("audio_rendered", True):
            continue
        stem = "drums" if entry.get("is_drum") else SLAKH_CLASS_TO_STEM.get(str(entry.get("inst_class")))
        if stem not in stems:
            continue
        path = _stem_file(audio_dir, str(key), _AUDIO_SUFFIXES)
        if path is None:
            warnings.warn(
                f"{meta_path}: stem {key} ({stem}) is marked rendered but has no audio file; using silence.",
                stacklevel=3,
            )
            continue
        groups[list(stems).index(stem)].append(_source(path))
    return groups


class SlakhDataset(_StemChunkDataset):
    """Slakh-layout multi-stem dataset (ours, MSDM's 4-stem wav folders, raw Slakh2100); items ``(S, T)``.

    See the module docstring for the layouts, chunking modes, the active-stem rule and missing/mismatched stems;
    ``options`` are the :class:`ChunkOptions` shared with :class:`MusdbDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        stems: Sequence[str] = ("bass", "drums", "guitar", "piano"),
        sample_rate: int = 22050,
        chunk_samples: int = 65536,
        mode: str = "random",
        *,
        layout: str = "auto",
        **options: Unpack[ChunkOptions],
    ) -> None:
        if layout not in SLAKH_LAYOUTS:
            raise UserInputError(f"layout must be one of {SLAKH_LAYOUTS}, got {layout!r}.")
        if not stems:
            raise UserInputError("stems must name at least one stem.")
        self.root = Path(root)
        self.split = split
        _check_dir(self.root, "Dataset root", "give the folder that holds the train/validation/test splits.")
        split_dir = self.root / split
        available = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        _check_dir(split_dir, f"Split {split!r}:", f"choose one of {available} under {self.root}.")
        tracks: list[TrackEntry] = []
        layouts_seen: set[str] = set()
        for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found = _detect_layout(folder, stems)
            if found is None or (layout != "auto" and found != layout and not {found, layout} <= {"ours", "msdm"}):
                continue
            use = found if layout == "auto" else layout
            if use == "slakh2100":
                groups = _raw_slakh_sources(folder, stems)
                mixture = None  # Slakh's mix.flac also holds the other instruments: not the sum of these stems
            else:
                suffixes = (".wav",) if use == "msdm" else _AUDIO_SUFFIXES
                groups, mixture = _folder_sources(folder, stems, suffixes, "mix", _AUDIO_SUFFIXES)
                absent = [stem for stem, group in zip(stems, groups, strict=True) if not group]
                if use == "ours" and absent and not (folder / "metadata.json").is_file():
                    warnings.warn(
                        f"Track {folder.name} ({folder}) has no metadata.json and lacks {absent}: an interrupted "
                        "render? Rerun `mgdm-audio make-dataset` to finish it; the missing stems are read as silence.",
                        stacklevel=2,
                    )
            entry = _make_track(folder.name, folder, groups, sample_rate, mixture, use)
            if entry is None:
                warnings.warn(
                    f"Track {folder.name} ({folder}) has none of the stems {tuple(stems)}; skipped.", stacklevel=2
                )
                continue
            tracks.append(entry)
            layouts_seen.add(use)
        if not tracks:
            wanted = "any Slakh layout" if layout == "auto" else f"layout {layout!r}"
            raise UserInputError(
                f"No tracks in {wanted} under {split_dir}: expected TrackNNNNN/{{{','.join(stems)}}}.flac|wav "
                "(ours / MSDM) or TrackNNNNN/stems/Sxx.flac + metadata.yaml (Slakh2100)."
            )
        self.layouts = sorted(layouts_seen)
        super().__init__(
            tracks,
            stems,
            sample_rate=sample_rate,
            chunk_samples=chunk_samples,
            mode=mode,
            where=str(split_dir),
            **options,
        )


def seeded_chunks(dataset: Any, n: int, seed: int) -> torch.Tensor:
    """``n`` items of ``dataset`` chosen by a permutation seeded with ``seed`` (in index order), stacked
    ``(n, S, T)``."""
    if len(dataset) < 1:
        raise UserInputError("the dataset split has no chunks; check the dataset root.")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return torch.stack([torch.as_tensor(dataset[int(i)], dtype=torch.float32) for i in order])


def seeded_slakh_chunks(
    root: str | os.PathLike, split: str, stems: Sequence[str], sample_rate: int, chunk_samples: int, n: int, seed: int
) -> torch.Tensor:
    """:func:`seeded_chunks` of the sequential (non-overlapping) chunks of a Slakh-layout split."""
    dataset = SlakhDataset(
        root, split, stems=stems, sample_rate=sample_rate, chunk_samples=chunk_samples, mode="sequential"
    )
    return seeded_chunks(dataset, n, seed)


# ======================================================================================== MUSDB


def _unreadable_stem_file(files: Sequence[Path]) -> Path | str:
    """The first of ``files`` that ffprobe (through stempeg) cannot read, or a description when all can."""
    import stempeg  # noqa: PLC0415 (optional dependency, installed with musdb)

    for path in files:
        try:
            stempeg.Info(str(path))
        except Exception:  # noqa: BLE001 (ffmpeg-python raises its own Error; any failure marks the file)
            return path
    return f"A .stem.mp4 file under {files[0].parent}"


class MusdbDataset(_StemChunkDataset):
    """MUSDB18-HQ (``SUBSET/<Track>/{mixture,vocals,drums,bass,other}.wav``) or MUSDB18 (``SUBSET/*.stem.mp4``).

    Items are ``(S, T)`` mono (mean of L/R) stems; with ``return_mixture=True`` an item is ``(stems, mixture)``
    where ``mixture`` ``(1, T)`` is the provided mixture file's crop. ``.stem.mp4`` files are decoded through the
    ``musdb`` package (and ffmpeg), imported only when such files are present. ``mono=False`` is not
    supported yet (the separation prior is mono). ``options`` are the :class:`ChunkOptions` shared with
    :class:`SlakhDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        subset: str = "test",
        stems: Sequence[str] = ("vocals", "drums", "bass", "other"),
        sample_rate: int = 44100,
        mono: bool = True,
        chunk_samples: int = 262144,
        mode: str = "sequential",
        *,
        return_mixture: bool = False,
        **options: Unpack[ChunkOptions],
    ) -> None:
        if not mono:
            raise UserInputError("MusdbDataset reads mono (mean of L/R) only; pass mono=True.")
        self.root = Path(root)
        self.subset = subset
        self.return_mixture = bool(return_mixture)
        self._musdb_tracks: dict[str, Any] = {}
        self._musdb_cache: tuple[int, torch.Tensor, torch.Tensor] | None = None
        _check_dir(self.root, "MUSDB root", "give the folder that holds train/ and test/.")
        subset_dir = self.root / subset
        _check_dir(subset_dir, f"Subset {subset!r}:", f"use 'train' or 'test' under {self.root}.")
        tracks: list[TrackEntry] = []
        for folder in sorted(p for p in subset_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            groups, mixture = _folder_sources(folder, stems, _HQ_SUFFIXES, "mixture", _HQ_SUFFIXES)
            entry = _make_track(folder.name, folder, groups, sample_rate, mixture, "musdb18hq")
            if entry is not None:
                tracks.append(entry)
        stem_mp4 = sorted(subset_dir.glob("*.stem.mp4"))
        if not tracks and stem_mp4:
            tracks = self._musdb_entries(stem_mp4, stems, sample_rate)
        if not tracks:
            raise UserInputError(
                f"No MUSDB tracks under {subset_dir}: expected <Track>/{{mixture,{','.join(stems)}}}.wav (MUSDB18-HQ) "
                "or <Track>.stem.mp4 (MUSDB18)."
            )
        super().__init__(
            tracks,
            stems,
            sample_rate=sample_rate,
            chunk_samples=chunk_samples,
            mode=mode,
            where=str(subset_dir),
            **options,
        )

    # ---------------------------------------------------------------- MUSDB18 .stem.mp4 through musdb
    def _musdb_entries(self, files: list[Path], stems: Sequence[str], sample_rate: int) -> list[TrackEntry]:
        try:
            import musdb  # noqa: PLC0415 (optional dependency, imported only for .stem.mp4)
        except ImportError as err:
            raise UserInputError(
                f"{files[0].parent} holds MUSDB18 .stem.mp4 files, which need the musdb package and ffmpeg: "
                "run `pip install musdb` and install ffmpeg (e.g. `apt-get install ffmpeg`), "
                "or use MUSDB18-HQ wav folders."
            ) from err
        if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
            raise UserInputError(
                f"{files[0].parent} holds MUSDB18 .stem.mp4 files, which are decoded by ffmpeg/ffprobe, not found on "
                "PATH: install ffmpeg (e.g. `apt-get install ffmpeg`) or use MUSDB18-HQ wav folders."
            )
        try:
            db = musdb.DB(root=str(self.root), subsets=self.subset, is_wav=False)
        except Exception as err:  # ffprobe failed on some file: name it (musdb does not)
            raise UserInputError(
                f"{_unreadable_stem_file(files)} could not be read by ffprobe ({type(err).__name__}); it is not a "
                "valid .stem.mp4 (an interrupted download?): download it again or remove it."
            ) from err
        unknown = [stem for stem in stems if stem not in db.setup["targets"]]
        if unknown:
            raise UserInputError(
                f"MUSDB18 .stem.mp4 files under {files[0].parent} hold no stems {unknown}; choose stems among "
                f"{list(db.setup['targets'])}."
            )
        needed_streams = max(db.setup["stem_ids"].values()) + 1
        entries = []
        for track in db.tracks:
            if track.info.nb_audio_streams < needed_streams:
                raise UserInputError(
                    f"{track.path} has {track.info.nb_audio_streams} audio streams, not the {needed_streams} of a "
                    "MUSDB18 .stem.mp4 (mixture, drums, bass, other, vocals); move it out of the subset folder."
                )
            rate = int(track.rate)
            frames = int(round(float(track.duration) * rate))
            fake = StemSource(Path(track.path), rate, frames)
            groups = tuple((fake,) for _ in stems)
            name = str(track.name)
            self._musdb_tracks[name] = track
            entries.append(TrackEntry(name, Path(track.path), groups, fake.length_at(sample_rate), fake, "musdb18"))
        return entries

    def _musdb_full(self, track: int) -> tuple[torch.Tensor, torch.Tensor]:
        from mgdm_audio.audio.io import resample

        if self._musdb_cache is not None and self._musdb_cache[0] == track:
            return self._musdb_cache[1], self._musdb_cache[2]
        entry = self.tracks[track]
        handle = self._musdb_tracks[entry.name]
        rate = int(handle.rate)

        def mono(array: np.ndarray) -> torch.Tensor:
            wav = torch.from_numpy(np.asarray(array, dtype=np.float32).T).mean(dim=0)
            return resample(wav, rate, self.sample_rate)

        stems = torch.stack([mono(handle.targets[s].audio) for s in self.stems])
        mixture = mono(handle.audio)[None]
        length = min(entry.length, stems.shape[-1])
        stems = torch.nn.functional.pad(stems[:, :length], (0, entry.length - length))
        mixture = torch.nn.functional.pad(mixture[:, :length], (0, entry.length - length))
        self._musdb_cache = (track, stems, mixture)
        return stems, mixture

    def _read_stems(self, track: int, start: int, stop: int) -> torch.Tensor:
        if self._cache is not None or self.tracks[track].layout != "musdb18":
            return super()._read_stems(track, start, stop)
        stems, _ = self._musdb_full(track)
        out = stems[:, max(0, start) : max(0, stop)]
        return torch.nn.functional.pad(out, (0, (stop - start) - out.shape[-1]))

    def load_mixture(self, track: int | str) -> torch.Tensor | None:
        """The provided mixture ``(1, length)`` at the dataset rate (gain applied)."""
        index = self._track_position(track)
        if self.tracks[index].layout == "musdb18":
            return self._musdb_full(index)[1] * self.gain
        return super().load_mixture(index)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        stems = super().__getitem__(index)
        if not self.return_mixture:
            return stems
        track, start = self.crop_position(index)
        entry = self.tracks[track]
        stop = start + self.chunk_samples
        if entry.layout == "musdb18":
            full = self._musdb_full(track)[1]
            mix = torch.nn.functional.pad(full[:, start:stop], (0, stop - start - full[:, start:stop].shape[-1]))
        elif entry.mixture is not None:
            mix = read_segment(
                entry.mixture.path, start, min(stop, entry.length), sample_rate=self.sample_rate, mono=True
            )
            mix = torch.nn.functional.pad(mix, (0, stop - start - mix.shape[-1]))
        else:
            return stems, stems.sum(dim=0, keepdim=True)  # no mixture file: the sum of the (gain-scaled) stems
        return stems, mix * self.gain
