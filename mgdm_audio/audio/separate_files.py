"""The separation job behind ``mgdm-audio separate``: files in, ``OUT/PRIOR/TRACK/STEM.wav`` + ``run.json`` out.

Every input is probed once before any separation starts (:func:`~mgdm_audio.audio.source.probe_file`: it exists, is
audio, mono or stereo, not empty, not truncated, no NaN; its frames and RMS are counted) and every output folder is
checked (writable; no existing outputs unless ``force`` or ``skip_existing``; no two inputs or outputs on one path:
the naming rule of :mod:`mgdm_audio.core.outputs`), so a user mistake costs nothing and leaves nothing behind. Each
input is then streamed once: the stems are written into temporary files as they come and renamed when the track is
complete, while the figures of ``run.json`` and the plot are accumulated from the same blocks. An error or an
interruption (SIGINT, SIGTERM, SIGHUP) removes the temporary files of the track in progress and the folders the run
made that stayed empty, and a run removes the temporary files that a killed earlier run left in its folders.

Stems come at the input's channels and rate (``--prior-rate-mono``: the prior's mono stems at its rate), in the
input's bit depth unless ``subtype`` says otherwise (16-bit for 8-bit and lossy inputs, FLAC: 24-bit for float
inputs). Samples beyond [-1, 1] in integer and MP3 outputs are clamped (``clip_mode="clamp"``) or the track's stems
are all scaled by ``1 / peak`` (``"rescale"``, Demucs's name; they then sum to the input times that factor).

Layout per track (Demucs-like; ``filename`` is a template such as Demucs's ``{track}/{stem}.{ext}``, the default)::

    OUT/PRIOR/TRACK/bass.wav ... (the stems; with --two-stems STEM: STEM.wav and no_STEM.wav)
    OUT/PRIOR/TRACK/samples/STEM_k.wav   (with n_samples K > 1: every posterior sample)
    OUT/PRIOR/TRACK/run.json             (prior, weights hash, sampler, preset, seed, versions, cost, timing)
    OUT/PRIOR/TRACK/separation.png       (with plot: mixture and stem spectrograms, and the spread when K > 1)
    OUT/PRIOR/job.json                   (under torchrun: the whole job, written by rank 0 when every rank is done)

A track is finished when its stems and its ``run.json`` (written last) exist; ``skip_existing`` skips finished
tracks and redoes one cut short, so a killed run resumes by running it again with ``--skip-existing``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.audio.decode import MP3_RATES
from mgdm_audio.audio.io import StreamingWriter
from mgdm_audio.audio.separator import Separator
from mgdm_audio.audio.source import MixtureSource, probe_file
from mgdm_audio.audio.track_plot import SpectrogramSketch, plot_sketch
from mgdm_audio.core.atomic import created_folders, remove_empty_folders, remove_stale_parts, write_atomic
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.outputs import (
    DEFAULT_TEMPLATE,
    check_template,
    distinct_track_names,
    format_target,
    refuse_duplicate_targets,
)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif", ".m4a", ".aac", ".mp4", ".wma", ".webm")
CLIP_MODES = ("clamp", "rescale")


@dataclass
class OutputOptions:
    format: str = "wav"  # wav | flac | mp3
    subtype: str | None = None  # PCM_16 | PCM_24 | FLOAT; None: the input's bit depth
    two_stems: str | None = None
    skip_existing: bool = False
    force: bool = False
    plot: bool = False
    clip_mode: str = "clamp"  # clamp | rescale
    mp3_bitrate: int = 320  # kbit/s
    filename: str = DEFAULT_TEMPLATE  # relative to OUT/PRIOR: {track}, {trackext}, {stem}, {ext}


def output_subtype(options: OutputOptions, source: MixtureSource) -> str:
    """The sample format of the stems: the option, else the input's (see the module docstring)."""
    if options.format == "mp3":
        return "MP3"
    if options.subtype is not None:
        return options.subtype
    if source.subtype in ("PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        return "PCM_24" if options.format == "flac" or source.subtype == "PCM_24" else "FLOAT"
    return "PCM_16"


def expand_inputs(paths: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Files as given; folders contribute their audio files (sorted; with ``recursive`` also those in subfolders,
    hidden files and folders skipped). One clear error for a missing path or a folder without audio."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            candidates = p.rglob("*") if recursive else p.iterdir()
            found = sorted(
                q
                for q in candidates
                if q.is_file()
                and q.suffix.lower() in AUDIO_SUFFIXES
                and not any(part.startswith(".") for part in q.relative_to(p).parts)
            )
            if not found:
                where = " or its subfolders" if recursive else " (--recursive searches subfolders)"
                raise UserInputError(f"folder {p}{where} contains no audio files ({', '.join(AUDIO_SUFFIXES)}).")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise UserInputError(f"input {p} does not exist.")
    if not files:
        raise UserInputError("no input files were given.")
    return files


@dataclass
class TrackTargets:
    """Where one track's files go (:func:`track_targets`)."""

    stems: dict[str, Path]
    samples: dict[tuple[str, int], Path]
    run_json: Path
    plot: Path

    @property
    def folder(self) -> Path:
        """The folder of the first stem (the track folder in the default layout)."""
        return next(iter(self.stems.values())).parent

    def files(self) -> list[tuple[Path, str]]:
        named = [(p, n) for n, p in self.stems.items()] + [(p, f"{n} sample {j}") for (n, j), p in self.samples.items()]
        return [*named, (self.run_json, "run.json"), (self.plot, "plot")]

    def folders(self) -> set[Path]:
        return {p.parent for p, _ in self.files()}

    def finished(self) -> bool:
        """Every stem, sample and ``run.json`` is there (``run.json`` is written last: a track cut short is not)."""
        return all(p.exists() for p in [*self.stems.values(), *self.samples.values(), self.run_json])


def track_targets(
    root: Path, track: str, source: Path, names: Sequence[str], stems: Sequence[str], k: int, ext: str, template: str
) -> TrackTargets:
    """The paths of one track's outputs under ``root`` (= OUT/PRIOR) by the ``--filename`` template."""

    def target(stem: str, suffix: str) -> Path:
        return root / format_target(template, track, source.suffix, stem, suffix)

    samples = {(n, j): target(f"samples/{n}_{j}", ext) for n in stems for j in range(k)} if k > 1 else {}
    return TrackTargets({n: target(n, ext) for n in names}, samples, target("run", "json"), target("separation", "png"))


def output_names(stems: Sequence[str], options: OutputOptions) -> list[str]:
    if options.two_stems is None:
        return list(stems)
    if options.two_stems not in stems:
        raise UserInputError(f"--two-stems {options.two_stems}: the prior's stems are {', '.join(stems)}.")
    return [options.two_stems, f"no_{options.two_stems}"]


def _check_writable(folder: Path) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserInputError(f"output folder {folder} cannot be created or written (check -o and permissions).")


def separate_files(
    files: Sequence[Path],
    out: Path,
    separator: Separator,
    options: OutputOptions,
    *,
    on_track: Callable[[dict[str, Any]], None] | None = None,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Separate ``files`` into ``out``; returns one summary dict per track (``skipped`` for finished tracks).

    ``on_track(state)`` is called before each track with ``{"path", "index", "count", "done_seconds" (audio before
    this track), "total_seconds"}``, once every input has been checked.

    Sharded (``torchrun``: ``world > 1``): every rank checks every input (so all stop on the same mistake) and
    waits at ``barrier`` for the others to have done so; the tracks to separate are dealt by :func:`deal_tracks`;
    each rank writes its own tracks and returns their summaries (rank 0 also the skipped ones); after ``barrier``
    rank 0 writes ``OUT/PRIOR/job.json``, the record of the whole job (:func:`write_job_record`)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} processes")  # a caller's bug
    if options.clip_mode not in CLIP_MODES:
        raise UserInputError(f"--clip-mode must be one of {', '.join(CLIP_MODES)}, got {options.clip_mode!r}.")
    ext = {"wav": ".wav", "flac": ".flac", "mp3": ".mp3"}[options.format]
    names = output_names(separator.prior.stems, options)
    template = check_template(options.filename)
    root = out / separator.prior_name
    targets = [
        track_targets(root, t, f, names, separator.prior.stems, separator.n_samples, ext, template)
        for f, t in zip(files, distinct_track_names(files), strict=True)
    ]
    job = [(root / JOB_RECORD, "the job record")] if world > 1 else []
    refuse_duplicate_targets(
        job + [(p, f"{f}'s {what}") for f, t in zip(files, targets, strict=True) for p, what in t.files()]
    )
    plan: list[tuple[MixtureSource, TrackTargets, bool]] = []
    for f, target in zip(files, targets, strict=True):
        source = probe_file(f)  # every input is decoded once before any work: truncation and NaNs are found here
        rate, _ = separator.output_format(source)
        if options.format == "mp3" and rate not in MP3_RATES:
            raise UserInputError(
                f"{f}: MP3 cannot store {rate} Hz stems (it stores {', '.join(map(str, MP3_RATES))} Hz); "
                "use WAV or FLAC, or --prior-rate-mono."
            )
        for folder in target.folders():
            _check_writable(folder)
        existing = [p for p in target.stems.values() if p.exists()]
        if existing and not (options.force or options.skip_existing):
            raise UserInputError(
                f"{existing[0]} already exists; use --force to overwrite or --skip-existing to keep finished tracks."
            )
        plan.append((source, target, options.skip_existing and not options.force and target.finished()))
    if world > 1 and barrier is not None:
        barrier()  # every rank has checked every input before any writes: all plans (and deals) are the same
    owner = deal_tracks([0.0 if skip else source.seconds for source, _, skip in plan], world)
    mine = [i for i, (_, _, skip) in enumerate(plan) if (0 if skip else owner[i]) == rank]
    made = [d for i in mine for folder in plan[i][1].folders() for d in created_folders(folder)]
    summaries = []
    total = sum(plan[i][0].seconds for i in mine)
    before = 0.0
    try:
        for n, i in enumerate(mine):
            source, target, skip = plan[i]
            path = files[i]
            if on_track is not None:
                state = {"path": path, "index": n, "count": len(mine), "done_seconds": before, "total_seconds": total}
                on_track(state)
            before += source.seconds
            if skip:
                summaries.append({"input": str(path), "output": str(target.folder), "skipped": True})
                continue
            for folder in target.folders():
                remove_stale_parts(folder)  # what a killed earlier run left behind
            summaries.append(_separate_one(path, source, target, separator, options, names))
    except BaseException:  # an error or a signal: no temporary files and no empty track folders remain
        for _, target, _ in plan:
            for folder in target.folders():
                remove_stale_parts(folder, own=True)
        remove_empty_folders(made)
        raise
    if world > 1:
        if barrier is not None:
            barrier()  # every rank's tracks are written
        if rank == 0:
            write_job_record(root / JOB_RECORD, files, plan, owner, world)
    return summaries


JOB_RECORD = "job.json"


def deal_tracks(seconds: Sequence[float], world: int) -> list[int]:
    """The rank of each track: longest first, each to the rank with the least audio so far (ties: the lower rank),
    so that the ranks finish together; every rank computes the same deal from the same inputs."""
    load = [0.0] * world
    owner = [0] * len(seconds)
    for i in sorted(range(len(seconds)), key=lambda i: -seconds[i]):
        owner[i] = min(range(world), key=lambda r: load[r])
        load[owner[i]] += seconds[i]
    return owner


def write_job_record(
    path: Path,
    files: Sequence[Path],
    plan: Sequence[tuple[MixtureSource, TrackTargets, bool]],
    owner: Sequence[int],
    world: int,
) -> None:
    """``job.json`` of a sharded job: per track its input, its ``run.json`` (read back: what its rank wrote), the rank
    and whether it was skipped as finished; and the totals (audio seconds, NFE, each rank's separation seconds)."""
    tracks: list[dict[str, Any]] = []
    for f, (source, target, skip), r in zip(files, plan, owner, strict=True):
        entry: dict[str, Any] = {"input": str(f), "run_json": str(target.run_json), "audio_seconds": source.seconds}
        if skip:
            entry["skipped"] = True
        else:
            entry["rank"] = r
            entry["run"] = json.loads(target.run_json.read_text())
        tracks.append(entry)
    runs = [t["run"] for t in tracks if "run" in t]
    by_rank = [sum(t["run"]["seconds"] for t in tracks if t.get("rank") == r) for r in range(world)]
    record = {
        "world_size": world,
        "tracks": tracks,
        "separated": len(runs),
        "skipped": len(tracks) - len(runs),
        "audio_seconds": sum(float(t["audio_seconds"]) for t in tracks if "run" in t),
        "nfe": sum(int(run["nfe"]) for run in runs),
        "rank_seconds": by_rank,
    }
    _write_json(path, record)


class _TrackStats:
    """What ``run.json`` and the plot need, accumulated from the streamed ``(K, S, C, n)`` blocks."""

    def __init__(self, stems: list[str], k: int, sketch: SpectrogramSketch | None) -> None:
        self.stems, self.k, self.sketch = stems, k, sketch
        self.sum_sq = torch.zeros(len(stems), dtype=torch.float64)
        self.var_sum = torch.zeros_like(self.sum_sq)
        self.values = 0  # samples per stem over all channels

    def add(self, block: Tensor, mean: Tensor) -> None:
        self.sum_sq += mean.double().pow(2).sum((-2, -1))
        if self.k > 1:
            self.var_sum += block.double().var(0, unbiased=True).sum((-2, -1))
        self.values += mean.shape[-1] * mean.shape[-2]
        if self.sketch is not None:
            mid = mean.mean(-2)  # (S, n): the stems' mid
            rows = [mid.sum(0, keepdim=True), mid]
            if self.k > 1:
                rows.append(block.mean(-2).std(0, unbiased=True))
            self.sketch.push(torch.cat(rows))

    def summary(self) -> dict[str, Any]:
        rms = (self.sum_sq / max(self.values, 1)).sqrt()
        info: dict[str, Any] = {"stems": self.stems, "stem_rms": {n: float(rms[i]) for i, n in enumerate(self.stems)}}
        if self.k > 1:
            spread = (self.var_sum / max(self.values, 1)).sqrt()
            info["spread_rms"] = {n: float(spread[i]) for i, n in enumerate(self.stems)}
            info["relative_spread"] = {
                n: float(spread[i] / rms[i]) if rms[i] > 0 else 0.0 for i, n in enumerate(self.stems)
            }
        return info


def _separate_one(
    path: Path,
    source: MixtureSource,
    target: TrackTargets,
    separator: Separator,
    options: OutputOptions,
    names: list[str],
) -> dict[str, Any]:
    for folder in target.folders():
        folder.mkdir(parents=True, exist_ok=True)
    k, stems = separator.n_samples, list(separator.prior.stems)
    rate, channels = separator.output_format(source)
    subtype = output_subtype(options, source)
    index = {n: i for i, n in enumerate(stems)}
    deferred = options.clip_mode == "rescale" and subtype != "FLOAT"

    def open_writer(dest: Path) -> StreamingWriter:
        return StreamingWriter(
            dest,
            rate,
            channels,
            format=options.format,
            subtype=subtype,
            bitrate=options.mp3_bitrate,
            deferred=deferred,
        )

    sketch = None
    if options.plot:
        titles = ["mixture", *stems] + ([f"{n} spread (std over {k} samples)" for n in stems] if k > 1 else [])
        sketch = SpectrogramSketch(titles, rate, separator.output_frames(source))
    stats = _TrackStats(stems, k, sketch)
    writers: dict[str, StreamingWriter] = {}
    sample_writers: dict[tuple[str, int], StreamingWriter] = {}
    frames = [0]

    def consume(block: Tensor) -> None:  # (K, S, C, n)
        mean = block.mean(0)
        stats.add(block, mean)
        frames[0] += block.shape[-1]
        for n in names:
            if options.two_stems is not None and n.startswith("no_"):
                writers[n].write(mean.sum(0) - mean[index[options.two_stems]])
            else:
                writers[n].write(mean[index[n]])
        for (n, j), w in sample_writers.items():
            w.write(block[j, index[n]])

    try:
        for n in names:
            writers[n] = open_writer(target.stems[n])
        for key, sample_path in target.samples.items():
            sample_writers[key] = open_writer(sample_path)
        info = separator.separate(source, consume)
        every = [*writers.values(), *sample_writers.values()]
        peak = max(w.peak for w in every)
        scale = 1.0 / peak if deferred and peak > 1.0 else 1.0
        written = [w.commit(scale) for w in every]
    except BaseException:
        for w in [*writers.values(), *sample_writers.values()]:
            w.abort()
        raise
    info.update(stats.summary())
    info["input"] = str(path)
    info["output_subtype"] = subtype
    info["outputs"] = [str(p) for p in written]
    info["clip_mode"] = options.clip_mode
    info["rescale_factor"] = scale
    info["clipped_samples"] = {str(w.path): w.clipped_samples for w in every if w.clipped}
    if sketch is not None:
        sketch.frames = frames[0]
        sketch.finish()
        info["plot"] = str(plot_sketch(sketch, target.plot))
    _write_json(target.run_json, info)
    return info


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")
