"""The separation job behind ``mgdm-audio separate``: files in, ``OUT/PRIOR/TRACK/STEM.wav`` + ``run.json`` out.

Every input is checked (exists, is audio, mono or stereo, not empty) and every output folder is checked (writable;
no existing outputs unless ``force`` or ``skip_existing``; no two inputs or outputs on one path: the naming rule of
:mod:`mgdm_audio.core.outputs`) before any separation starts, so a user mistake costs nothing and leaves nothing
behind. Stems are streamed into temporary files and renamed when a track is complete; an error or interruption
(SIGINT, SIGTERM, SIGHUP) removes the temporary files of the track in progress and the folders the run made that
stayed empty, and a run removes the temporary files that a killed earlier run left in its folders.

Layout per track (Demucs-like; ``filename`` is a template such as Demucs's ``{track}/{stem}.{ext}``, the default)::

    OUT/PRIOR/TRACK/bass.wav ... (the stems; with --two-stems STEM: STEM.wav and no_STEM.wav)
    OUT/PRIOR/TRACK/samples/STEM_k.wav   (with n_samples K > 1: every posterior sample)
    OUT/PRIOR/TRACK/run.json             (prior, weights hash, sampler, preset, seed, versions, cost, timing)
    OUT/PRIOR/TRACK/separation.png       (with plot: mixture and stem spectrograms, and the spread when K > 1)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgdm_audio.audio.io import StreamingWriter, audio_info, read_audio
from mgdm_audio.audio.separator import Separator
from mgdm_audio.core.atomic import (
    created_folders,
    remove_empty_folders,
    remove_stale_parts,
    save_figure_atomic,
    write_atomic,
)
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.outputs import (
    DEFAULT_TEMPLATE,
    check_template,
    distinct_track_names,
    format_target,
    refuse_duplicate_targets,
)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif")


@dataclass
class OutputOptions:
    format: str = "wav"  # wav | flac | mp3
    subtype: str = "PCM_16"  # PCM_16 | PCM_24 | FLOAT
    two_stems: str | None = None
    skip_existing: bool = False
    force: bool = False
    plot: bool = False
    filename: str = DEFAULT_TEMPLATE  # relative to OUT/PRIOR: {track}, {trackext}, {stem}, {ext}


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
    on_track: Callable[[Path, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Separate ``files`` into ``out``; returns one summary dict per track (``skipped`` for existing outputs)."""
    prior_name = str(separator.prior.config.get("name", separator.prior.path.name))
    ext = {"wav": ".wav", "flac": ".flac", "mp3": ".mp3"}[options.format]
    names = output_names(separator.prior.stems, options)
    template = check_template(options.filename)
    tracks = distinct_track_names(files)
    targets = [
        track_targets(out / prior_name, t, f, names, separator.prior.stems, separator.n_samples, ext, template)
        for f, t in zip(files, tracks, strict=True)
    ]
    refuse_duplicate_targets(
        [(p, f"{f}'s {what}") for f, t in zip(files, targets, strict=True) for p, what in t.files()]
    )
    plan: list[tuple[Path, TrackTargets, bool, float]] = []
    for f, target in zip(files, targets, strict=True):
        info = audio_info(f)  # every input is checked before any work
        if info.channels > 2:
            raise UserInputError(f"{f} has {info.channels} channels; only mono and stereo mixtures are supported.")
        if info.frames == 0:
            raise UserInputError(f"{f} contains no audio (zero samples).")
        rms = separator.mixture_rms(f)  # decodes it all once: truncation and NaNs are found before any work
        for folder in target.folders():
            _check_writable(folder)
        existing = [p for p in target.stems.values() if p.exists()]
        if existing and not (options.force or options.skip_existing):
            raise UserInputError(
                f"{existing[0]} already exists; use --force to overwrite or --skip-existing to keep it."
            )
        plan.append((f, target, bool(existing) and options.skip_existing and not options.force, rms))
    made = [d for _, target, _, _ in plan for folder in target.folders() for d in created_folders(folder)]
    summaries = []
    try:
        for i, (f, target, skip, rms) in enumerate(plan):
            if on_track is not None:
                on_track(f, i, len(plan))
            if skip:
                summaries.append({"input": str(f), "output": str(target.folder), "skipped": True})
                continue
            for folder in target.folders():
                remove_stale_parts(folder)  # what a killed earlier run left behind
            summaries.append(_separate_one(f, target, separator, options, names, rms))
    except BaseException:  # an error or a signal: no temporary files and no empty track folders remain
        for _, target, _, _ in plan:
            for folder in target.folders():
                remove_stale_parts(folder, own=True)
        remove_empty_folders(made)
        raise
    return summaries


def _separate_one(
    path: Path,
    target: TrackTargets,
    separator: Separator,
    options: OutputOptions,
    names: list[str],
    rms: float,
) -> dict[str, Any]:
    k = separator.n_samples
    sr = separator.sample_rate
    stem_index = {n: i for i, n in enumerate(separator.prior.stems)}
    writers: dict[str, StreamingWriter] = {}
    sample_writers: dict[tuple[str, int], StreamingWriter] = {}

    def open_writer(dest: Path) -> StreamingWriter:
        return StreamingWriter(dest, sr, 1, format=options.format, subtype=options.subtype)

    sum_sq = torch.zeros(len(separator.prior.stems), dtype=torch.float64)
    var_sum = torch.zeros_like(sum_sq)
    frames = 0
    try:
        for n in names:
            writers[n] = open_writer(target.stems[n])
        for key, sample_path in target.samples.items():
            sample_writers[key] = open_writer(sample_path)
        for block in separator.iter_separate_file(path, mixture_rms=rms):  # (K, S, n)
            mean = block.mean(0)
            sum_sq += mean.double().pow(2).sum(-1)
            if k > 1:
                var_sum += block.double().var(0, unbiased=True).sum(-1)
            frames += block.shape[-1]
            for n in names:
                if options.two_stems is not None and n.startswith("no_"):
                    writers[n].write(mean.sum(0, keepdim=True) - mean[stem_index[options.two_stems]][None])
                else:
                    writers[n].write(mean[stem_index[n]][None])
            for (n, j), w in sample_writers.items():
                w.write(block[j, stem_index[n]][None])
        written = [w.commit() for w in writers.values()] + [w.commit() for w in sample_writers.values()]
    except BaseException:
        for w in [*writers.values(), *sample_writers.values()]:
            w.abort()
        raise
    info = dict(separator.last_info)
    rms = (sum_sq / max(frames, 1)).sqrt()
    info["stems"] = list(separator.prior.stems)
    info["stem_rms"] = {n: float(rms[i]) for i, n in enumerate(separator.prior.stems)}
    if k > 1:
        spread = (var_sum / max(frames, 1)).sqrt()
        info["spread_rms"] = {n: float(spread[i]) for i, n in enumerate(separator.prior.stems)}
        info["relative_spread"] = {
            n: float(spread[i] / rms[i]) if rms[i] > 0 else 0.0 for i, n in enumerate(separator.prior.stems)
        }
    info["input"] = str(path)
    info["outputs"] = [str(p) for p in written]
    clipped = [str(w.path) for w in [*writers.values(), *sample_writers.values()] if w.clipped]
    info["clipped_outputs"] = clipped
    if options.plot:
        info["plot"] = str(plot_track(path, target, separator))
    _write_json(target.run_json, info)
    return info


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def plot_track(path: Path, target: TrackTargets, separator: Separator) -> Path:
    """A PNG of the mixture's and each stem's log-magnitude spectrogram (and, with K > 1, the spread's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sr = separator.sample_rate
    stems = list(separator.prior.stems)
    rows: list[tuple[str, torch.Tensor]] = []
    mix, sr_in = read_audio(path, mono=True)
    from mgdm_audio.audio.io import resample

    rows.append(("mixture", resample(mix[0], sr_in, sr)))
    for n in stems:
        if n in target.stems and target.stems[n].exists():
            rows.append((n, read_audio(target.stems[n], mono=True)[0][0]))
    k = separator.n_samples
    if k > 1:
        for n in stems:
            samples = [read_audio(target.samples[(n, j)], mono=True)[0][0] for j in range(k)]
            rows.append((f"{n} spread (std over {k} samples)", torch.stack(samples).std(0)))
    n_fft = 1024
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.8 * len(rows)), sharex=True, squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], rows, strict=True):
        spec = torch.stft(wav.float(), n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()
        db = 20 * torch.log10(spec + 1e-6)
        seconds = wav.numel() / sr
        ax.imshow(db.numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, sr / 2000), vmin=-80, vmax=20)
        ax.set_ylabel("kHz")
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    save_figure_atomic(fig, target.plot, dpi=80)
    return target.plot


def audio_seconds(files: Sequence[Path]) -> float:
    total = 0.0
    for f in files:
        info = audio_info(f)
        total += info.frames / info.sample_rate
    return total if math.isfinite(total) else 0.0
