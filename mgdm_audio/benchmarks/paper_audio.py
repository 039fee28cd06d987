r"""The MGDM / MSDM papers' Slakh2100 audio protocol as one run (``mgdm-audio benchmark paper-audio``).

Protocol (MSDM's ``evaluation`` code, which MGDM reuses per chunk):

* every track of the split is cut into consecutive **non-overlapping 262,144-sample chunks** at the prior's sample
  rate (the trailing partial chunk is dropped); no chunk is filtered out (no silence or single-source rule here);
* each chunk is separated on its own from ``y = sum_k s_k`` (the sum of the four reference stems, at their raw
  scale: no input gain) with a sampler at its ``paper-audio`` preset (MGDM: 20 steps x 6 Gibbs sweeps), one posterior
  sample, observation noise ``sigma_y = 1e-4`` as in the separator;
* per track, the separated chunks are concatenated in time and scored against the references with SI-SDRi on 4 s
  windows with a 2 s hop **running across chunk boundaries** (:func:`mgdm_audio.metrics.sisdr.si_sdri_windows`:
  windows with at most one non-silent reference stem skipped, silent stems of kept windows still scored);
* the reported number per stem is the plain mean over all kept windows of all tracks (pooled), and "average" the
  mean of the four stems.

This differs from ``benchmark separation`` (which filters chunks, keeps windows inside a chunk and separates
through the streaming separator with its input gain): that suite compares samplers on this project's priors;
this one reproduces the papers' numbers with a published prior. It runs on the benchmark harness
(:func:`~mgdm_audio.benchmarks.harness.run_cells`): one cell per (run, track), grouped by track so that a track's
references are read once; the cache key holds every value that changes a number (the resolved sampler config and
start convention, the prior's weights, bf16, the data, chunk size, chunks per batch, track and seed), so a stopped
run resumes and a changed preset recomputes; under ``torchrun`` the tracks are dealt to the ranks.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mgdm_audio.audio.separation import SumOfStems
from mgdm_audio.benchmarks.harness import (
    Report,
    RunCell,
    Shard,
    cache_file,
    device_for_rank,
    run_cells,
    torchrun_shard,
)
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.rng import make_generator
from mgdm_audio.metrics.sisdr import si_sdri_windows
from mgdm_audio.samplers.run import (
    PosteriorRun,
    RunSpec,
    check_unique,
    parse_run_spec,
    parse_run_specs,
    resolve,
    run_posterior,
)

PAPER_CHUNK = 262_144
PAPER_STEMS = ("bass", "drums", "guitar", "piano")
SIGMA_Y = 1e-4
ENGINE_VERSION = 1
"""Part of every cache key: raise it when a change to this file changes the numbers of an unchanged cell."""


def track_chunks(dataset: Any) -> dict[str, list[int]]:
    """Dataset positions of each track's chunks, in time order."""
    by_track: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for position, (track, start) in enumerate(dataset.chunk_index):
        by_track[str(track)].append((int(start), position))
    return {t: [p for _, p in sorted(v)] for t, v in sorted(by_track.items())}


def separate_chunks(
    prior: Any, run: PosteriorRun, references: torch.Tensor, seed: int, batch_chunks: int, device: torch.device
) -> tuple[torch.Tensor, dict[str, float]]:
    """One posterior sample per chunk of ``references (n, S, T)`` from ``y = sum`` of each, ``batch_chunks`` chunks
    per batch, one generator seeded with ``seed`` carried across the batches; ``(n, S, T)`` and the cost (NFE and
    VJP summed over chunks)."""
    n, s, t = references.shape
    out = torch.empty(n, s, t)
    cost = {"nfe": 0.0, "vjp": 0.0}
    generator = make_generator(seed, device)
    for i in range(0, n, batch_chunks):
        ref = references[i : i + batch_chunks].to(device)
        problem = InverseProblem(SumOfStems(s, t), ref.sum(1, keepdim=True), SIGMA_Y)
        result = run_posterior(prior, problem, run, ref.shape[0], generator, x_shape=(s, t), device=device)
        out[i : i + batch_chunks] = result.samples.float().cpu()
        cost["nfe"] += result.nfe * ref.shape[0]
        cost["vjp"] += result.vjp * ref.shape[0]
    return out, cost


def summarise(rows: Sequence[dict[str, Any]], stems: Sequence[str]) -> dict[str, Any]:
    """Per sampler: SI-SDRi per stem pooled over all kept windows of all tracks, their average, and costs."""
    by_sampler: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_sampler[row["sampler"]].append(row)
    summary = {}
    for sampler, rs in by_sampler.items():
        windows = [w for r in rs for w in r["per_window"]]
        per_stem = torch.tensor(windows, dtype=torch.float64).mean(0).tolist() if windows else [None] * len(stems)
        chunks = sum(r["chunks"] for r in rs)
        summary[sampler] = {
            "preset": rs[0]["preset"],
            "si_sdri": dict(zip(stems, per_stem, strict=True)),
            "si_sdri_average": sum(per_stem) / len(per_stem) if windows else None,
            "windows": len(windows),
            "tracks": len(rs),
            "chunks": chunks,
            "nfe_per_chunk": sum(r["nfe"] for r in rs) / max(chunks, 1),
            "vjp_per_chunk": sum(r["vjp"] for r in rs) / max(chunks, 1),
            "seconds_per_chunk": sum(r["seconds"] for r in rs) / max(chunks, 1),
        }
    return summary


def markdown_report(summary: dict[str, Any], info: dict[str, Any], stems: Sequence[str]) -> str:
    lines = [
        f"# Paper audio protocol: {info['prior']} on {info['root']}/{info['split']}",
        "",
        f"{info['tracks']} tracks, {info['chunk_samples']}-sample non-overlapping chunks at {info['sample_rate']} Hz; "
        "SI-SDRi (dB) on 4 s / 2 s windows across chunk boundaries, mean over all kept windows; seed "
        f"{info['seed']}, device {info['device']}; prior weights sha256 `{info['weights_sha256']}`"
        + (f", converted from `{info['prior_source']['file']}`" if info.get("prior_source") else "")
        + ".",
        "",
        "| sampler | preset | " + " | ".join(stems) + " | average | windows | NFE/chunk | VJP/chunk | s/chunk |",
        "|---|---|" + "---|" * (len(stems) + 5),
    ]
    for name, s in summary.items():
        cells = [f"{s['si_sdri'][k]:.2f}" if s["si_sdri"][k] is not None else "n/a" for k in stems]
        avg = f"{s['si_sdri_average']:.2f}" if s["si_sdri_average"] is not None else "n/a"
        lines.append(
            f"| {name} | {s['preset']} | {' | '.join(cells)} | {avg} | {s['windows']} | {s['nfe_per_chunk']:.0f} "
            f"| {s['vjp_per_chunk']:.0f} | {s['seconds_per_chunk']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def track_seed(seed: int, track: str) -> int:
    """The sampler seed of a track: ``seed + crc32(track)`` (one generator per (run, track), across its batches)."""
    return seed + zlib.crc32(track.encode())


def run_paper_audio(
    root: str | Path,
    prior: str | Path | Any,
    samplers: Sequence[str | RunSpec] = ("mgdm",),
    preset: str = "paper-audio",
    split: str = "test",
    max_tracks: int | None = None,
    seed: int = 0,
    batch_chunks: int = 4,
    device: str = "auto",
    cache: Path | None = None,
    chunk_samples: int = PAPER_CHUNK,
    progress: bool = False,
    bf16: bool = False,
    shard: Shard | None = None,
) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Run the protocol; returns the per-(run, track) rows (``None`` on a ``torchrun`` rank other than 0) and the
    run's description (``info``). ``samplers``: run specs (``mgdm``, ``dps:paper-audio:gamma=1.0``; a spec without
    a preset takes ``preset``), resolved for the audio modality. ``bf16`` runs the network under bf16 autocast."""
    from mgdm_audio.audio.data.readers import SlakhDataset
    from mgdm_audio.audio.priors import load_prior

    shard = shard or Shard()
    if batch_chunks < 1:
        raise UserInputError(f"--batch-chunks must be at least 1, got {batch_chunks}.")
    if max_tracks is not None and max_tracks < 1:
        raise UserInputError(f"--max-tracks must be at least 1, got {max_tracks}.")
    runs = [s if isinstance(s, RunSpec) else parse_run_spec(s, preset) for s in samplers]
    check_unique(runs, "--samplers")
    resolved = {r.name: resolve(r, "audio") for r in runs}  # audio: every VP sampler starts at sqrt(1 - abar_T) n
    dev = device_for_rank(device, shard)
    model = load_prior(prior, dev, bf16=bf16) if isinstance(prior, str | Path) else prior
    if tuple(model.stems) != PAPER_STEMS:
        raise UserInputError(f"the paper protocol needs a prior over {', '.join(PAPER_STEMS)} (in that order).")
    if chunk_samples % int(getattr(model, "downsampling", 1)):
        raise UserInputError(f"chunks of {chunk_samples} samples do not fit the prior's length multiple.")
    sr = int(model.sample_rate)
    dataset = SlakhDataset(root, split, PAPER_STEMS, sr, chunk_samples, mode="sequential", min_active_stems=0)
    tracks = track_chunks(dataset)
    if not tracks:
        raise UserInputError(f"no track of {Path(root) / split} is at least {chunk_samples} samples long.")
    names = list(tracks)[:max_tracks]
    weights = str(getattr(model, "weights_sha256", ""))
    prior_name = str(model.config.get("name", getattr(model, "path", Path(str(prior))).name))

    def key(run: RunSpec, track: str) -> dict[str, Any]:
        return {
            "engine": "paper-audio",
            "version": ENGINE_VERSION,
            **resolved[run.name].key(),
            "prior": weights or prior_name,
            "bf16": bf16,
            "data": [str(Path(root).resolve()), split, sr],
            "chunk_samples": chunk_samples,
            "batch_chunks": batch_chunks,
            "sigma_y": SIGMA_Y,
            "track": track,
            "seed": track_seed(seed, track),
        }

    cells = [RunCell(r, t, key(r, t), group=t) for t in names for r in runs]  # a track's references load once

    def compute(group: list[RunCell[str]]) -> list[list[dict[str, Any]]]:
        track = group[0].item
        refs = torch.stack([dataset[p].float() for p in tracks[track]])  # (n, S, T), read once per track
        out = []
        for cell in group:
            start = time.perf_counter()
            est, cost = separate_chunks(model, resolved[cell.run.name], refs, cell.key["seed"], batch_chunks, dev)
            score = si_sdri_windows(_join(est), _join(refs), sr)
            row = {"track": track, "chunks": int(refs.shape[0]), "per_window": score.per_window.tolist()}
            out.append([{**row, **cost, "seconds": time.perf_counter() - start}])
        return out

    results = run_cells(
        cells,
        compute,
        cache,
        shard=shard,
        progress=progress,
        desc="paper audio",
        status=lambda cell: f"{cell.run.name} {cell.item}",
    )
    info = {
        "prior": prior_name,
        "weights_sha256": weights,
        "prior_source": model.config.get("converted_from"),
        "root": str(root),
        "split": split,
        "sample_rate": sr,
        "chunk_samples": chunk_samples,
        "tracks": len(names),
        "seed": seed,
        "device": str(dev),
        "batch_chunks": batch_chunks,
        "bf16": bf16,
        "world_size": shard.world,
    }
    if results is None:
        return None, info
    by_cell = {(c.run.name, c.item): rows[0] for c, rows in zip(cells, results, strict=True)}
    # the cache is keyed by the configuration; the label and the preset as asked are this table's
    rows = [{"sampler": r.name, "preset": r.preset, **by_cell[(r.name, t)]} for r in runs for t in names]
    return rows, info


def _join(x: torch.Tensor) -> torch.Tensor:
    """``(n, S, T)`` chunks in time order -> ``(S, n T)``: the track's chunks end to end."""
    return x.permute(1, 0, 2).reshape(x.shape[1], -1)


# ============================================================================================ command line
PLOT = "no plot (the table is the result)"


def add_arguments(parser: Any) -> None:
    """``mgdm-audio benchmark paper-audio`` flags (the harness adds --json, --markdown, --cache, --threads)."""
    parser.add_argument("--root", type=Path, required=True, help="Slakh root holding the split folder (e.g. test/)")
    parser.add_argument("--prior", required=True, help="export folder (e.g. a converted MSDM checkpoint)")
    parser.add_argument(
        "--samplers",
        default="mgdm",
        metavar="[NAME=]S[:PRESET[:k=v]],...",
        help="run specs, e.g. mgdm,dps:paper-audio:gamma=1.0 (a spec without a preset runs at --preset)",
    )
    parser.add_argument("--preset", default="paper-audio", help="the samplers' preset")
    parser.add_argument("--split", default="test", help="split folder")
    parser.add_argument("--max-tracks", type=int, help="first N tracks in name order (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (per track: seed + crc32(track))")
    parser.add_argument("--batch-chunks", type=int, default=4, help="chunks per network batch")
    parser.add_argument("-d", "--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast (GPUs)")


def run(args: Any) -> Report | None:
    """``mgdm-audio benchmark paper-audio``: the rows, the summary and the table as one report (tracks sharded
    under ``torchrun``: rank 0 merges and writes the outputs, the other ranks return None)."""
    shard = torchrun_shard(args.cache)
    rows, info = run_paper_audio(
        args.root, args.prior, parse_run_specs(args.samplers, args.preset), args.preset, args.split,
        args.max_tracks, args.seed, args.batch_chunks, args.device, cache_file(args.cache),
        progress=not args.no_progress and shard.rank == 0, bf16=args.bf16, shard=shard,
    )  # fmt: skip
    if rows is None:
        return None
    summary = summarise(rows, PAPER_STEMS)
    document = {"info": info, "summary": summary, "rows": rows}
    text = markdown_report(summary, info, PAPER_STEMS)
    return Report(document, text, weights_sha256=info["weights_sha256"] or None, device=info["device"])
