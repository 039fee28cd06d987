r"""The separation benchmark: every sampler, and the oracles, on the same test chunks of a multi-stem dataset.

Chunks (as MSDM's ``evaluation/experiments.py``, gladia-research-group/multi-source-diffusion-models): consecutive
non-overlapping chunks of every track of the split
(:func:`benchmark_chunk_samples`: the prior's chunk length, or whole multiples of it up to one 4 s scoring window,
unless ``chunk_seconds`` is given; trailing partial chunks dropped), at the prior's sample rate, mono. Each chunk is
separated the way ``mgdm-audio separate`` separates a file (the prior's segment length, overlapping segments).
Only chunks with at least two active stems are kept, with MSDM's silence rule applied to the chunk
(a stem is silent when ``||s||_2 / N < 1.5e-5``, i.e. RMS below ``1.5e-5 sqrt(N)``). The mixture is the sum of the
reference stems. The kept chunks are put in a fixed order seeded by ``seed``: tracks in a shuffled order, chunks of
a track in a shuffled order, then taken round-robin over tracks, so the first ``max_chunks`` are spread over the
tracks; the order does not depend on ``max_chunks`` (a short run's chunks are the first ones of a longer run).

Per chunk and run (a sampler at a preset with overrides, or an oracle) and stem, a row::

    {"sampler", "method", "preset", "overrides", "track", "chunk", "chunk_id", "stem", "si_sdri",
     "si_sdri_nonsilent", "n_windows", "n_windows_nonsilent", "sdr", "nfe", "vjp", "seconds", "seed"}

(``sampler`` is the table's label, ``method`` the registry sampler or oracle behind it, ``chunk`` the start sample
and ``chunk_id`` ``"track:start"``.)

* ``si_sdri``: MSDM's protocol on the chunk (4 s windows, 2 s hop, windows with fewer than two non-silent
  reference stems skipped, silent stems of kept windows still scored; mean over windows),
  :func:`mgdm_audio.metrics.sisdr.si_sdri_windows`; ``si_sdri_nonsilent``: the same with each stem's own silent
  windows left out. Windows stay inside a chunk (MSDM concatenates a track's chunks and lets windows cross chunk
  boundaries; with whole-chunk windows this changes only the windows that straddle two chunks).
* ``sdr``: BSSEval v4 SDR (museval, 1 s frames, median over frames) when asked for, else ``None``.
* ``nfe``, ``vjp``, ``seconds``: the sampler's cost on this chunk (0 NFE for the oracles).
* Every sampler uses the same seed on a chunk: ``seed + crc32("track:start")`` (mod 2^31).

With ``--init EXPORT`` (a discriminative separator, :mod:`~mgdm_audio.audio.discriminative`) the run ``demucs`` is
that separator alone and a run with ``init_sigma=S`` is its sampler warm-started from the separator's estimate at
``S`` (the separator's time is part of the run's seconds).

Oracles on the same chunks: ``irm`` and ``ibm`` (ideal ratio and binary masks from the true stems: the ceiling of
mask-based separation) and ``mixture`` (every estimate is the mixture: SI-SDRi 0, the floor). Baseline without
true stems: ``wiener``, the posterior mean under independent stationary Gaussian stems whose spectra are fitted on
the root's ``train`` split (a mask ``P_k / sum_j P_j`` per frequency): what a prior must beat to have learnt more
than each stem's average spectrum; and ``wiener-sample``, one exact posterior sample under the same Gaussian model
(:func:`~mgdm_audio.audio.spectra.wiener_posterior_sample`). A sampler's row is one posterior sample, so its
learning-free reference is ``wiener-sample``; ``wiener`` is the reference of a posterior mean (a ``--sampler-set``
run with ``n_samples=K`` scores the mean of K samples).

Summary per run: SI-SDRi per stem pooled over all kept windows of all chunks (MSDM's aggregation: a plain mean over
windows), their average over stems ("average" in the papers), the same for the non-silent variant, the median over
chunks of the per-chunk SDR per stem (SiSEC's median over tracks, at chunk level), and NFE, VJP and seconds per
chunk. Beside it (:mod:`~mgdm_audio.benchmarks.separation_stats`): one row per (run, chunk) with the chunk's mean
SI-SDRi over stems, each run's mean over chunks with a Student-t 95 % interval next to its NFE, VJP and seconds (the
equal-compute table and plot), and paired differences with t intervals of every sampler run against the reference
run (``--reference``, default the first sampler run) and the ``wiener``, ``wiener-sample`` and ``mixture``
baselines.

Runs are resumable through the harness (:mod:`mgdm_audio.benchmarks.harness`): each finished (run, chunk) is a cache
line keyed by everything it depends on (:func:`cell_key`: the resolved sampler config and separator settings, prior
weights, dataset chunk and seed), so a killed benchmark continues where it stopped (a cached result without SDR is
recomputed when BSSEval is asked for; stems are read only for chunks left to compute). Under ``torchrun``
(``WORLD_SIZE > 1``) the chunks are dealt round-robin to the ranks and rank 0 merges their results and writes the
outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgdm_audio.audio.spectra import welch_psd, wiener_posterior_sample, wiener_separation
from mgdm_audio.benchmarks import equal_compute, separation_stats
from mgdm_audio.benchmarks.harness import (
    Report,
    RunCell,
    Shard,
    cache_file,
    device_for_rank,
    finite_or_none,
    fmt,
    run_cells,
    torchrun_shard,
)
from mgdm_audio.core.errors import InternalError, UserInputError
from mgdm_audio.core.runtime import resolve_device
from mgdm_audio.metrics.sisdr import (
    SILENCE_THRESHOLD,
    ideal_binary_mask,
    ideal_ratio_mask,
    mixture_baseline,
    si_sdri_windows,
    window_lengths,
)
from mgdm_audio.samplers.run import RunSpec, check_unique, parse_run_specs

SLAKH_STEMS = ("bass", "drums", "guitar", "piano")
MUSDB_STEMS = ("vocals", "drums", "bass", "other")
LAYOUT_STEMS = {"slakh": SLAKH_STEMS, "musdb": MUSDB_STEMS}
ORACLES = ("irm", "ibm", "mixture")
ORACLE_PRESET = "oracle"
#: Learning-free baselines that need no true stems, both under stationary Gaussian stems with the train split's
#: spectra: ``wiener`` (the posterior mean) and ``wiener-sample`` (one exact posterior sample, seeded per chunk).
BASELINES = ("wiener", "wiener-sample")
#: ``--sampler-set`` key that sets the separator's number of posterior samples (their mean is scored), not a
#: sampler setting: ``mgdm-mean4=mgdm:fast:n_samples=4``.
N_SAMPLES_KEY = "n_samples"
#: ``--sampler-set`` key that warm-starts a sampler from the ``--init`` separator's estimate at this noise level
#: (``mgdm-warm=mgdm:fast:init_sigma=0.3``); the sampler ``demucs`` is that separator alone.
INIT_SIGMA_KEY = "init_sigma"
BASELINE_PRESET = "train PSD"
#: Welch resolution and the number of train chunks of the ``wiener`` baseline's stem spectra.
WIENER_BINS, WIENER_TRAIN_CHUNKS = 1025, 256
MIN_ACTIVE_STEMS = 2
ENGINE_VERSION = 1
"""Part of every cache key: raise it when a change to this file changes the numbers of an unchanged cell."""


# ============================================================================================ runs
def is_oracle(run: RunSpec) -> bool:
    """No sampler behind it: an oracle (true stems) or a learning-free baseline (``wiener``)."""
    return run.sampler in ORACLES or run.sampler in BASELINES


#: even chunks per network batch in the benchmark (see ``run_benchmark``)
BENCHMARK_BATCH_CHUNKS = 2


def parse_sampler_set(text: str) -> list[RunSpec]:
    """``--sampler-set``: comma-separated ``NAME=sampler[:preset[:key=value...]]`` (the run-spec syntax of every
    benchmark, :func:`~mgdm_audio.samplers.run.parse_run_spec`, with the label required).

    >>> parse_sampler_set("mgdm-R1=mgdm:fast:n_reps=1,dps-200=dps:fast:n_steps=200")[0]
    RunSpec(sampler='mgdm', preset='fast', overrides=(('n_reps', 1),), label='mgdm-R1')
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        label = item.split(":")[0].partition("=")
        if not label[1] or not label[0].strip():
            raise UserInputError(
                f"--sampler-set entry {item!r} is not NAME=sampler[:preset[:key=value...]] "
                "(e.g. mgdm-R1=mgdm:fast:n_reps=1)."
            )
    return parse_run_specs(",".join(items), "default", "--sampler-set")


def make_runs(
    samplers: Sequence[str], preset: str, sampler_set: str | None = None, oracles: bool = True
) -> list[RunSpec]:
    """``--samplers`` at ``--preset`` (labels ``sampler`` or ``sampler:preset``), then the ``--sampler-set``
    variants, then the oracles. Names must be unique."""
    runs = [
        RunSpec(s, preset, (), s if preset == "default" else f"{s}:{preset}")
        for s in samplers
        if s not in ORACLES and s not in BASELINES
    ]
    runs += parse_sampler_set(sampler_set) if sampler_set else []
    if oracles:
        runs += [RunSpec(o, ORACLE_PRESET, (), o) for o in ORACLES]
        runs += [RunSpec(b, BASELINE_PRESET, (), b) for b in BASELINES]
    check_unique(runs, "sampler names in the table")
    return runs


def budget_runs(runs: Sequence[RunSpec]) -> tuple[list[RunSpec], dict[str, dict[str, Any]]]:
    """``--equal-compute``: every cold, one-sample sampler run at x0.25 and x0.5 its cost knob (``AUDIO_FACTORS``
    and ``AUDIO_KNOBS`` of :mod:`~mgdm_audio.benchmarks.equal_compute`; oracles, baselines and the discriminative
    separator have no knob), and ``{label: {"base", "knob", "value", "factor"}}`` for those runs and the runs they
    scale (x1)."""
    extra: list[RunSpec] = []
    meta: dict[str, dict[str, Any]] = {}
    for run in runs:
        overrides = run.overrides_dict
        if N_SAMPLES_KEY in overrides or INIT_SIGMA_KEY in overrides:
            continue  # means of K samples and warm starts are other estimators, not budgets of one
        # AUDIO_FACTORS stop at x1: no budget passes the preset's own grid, so no grid cap is needed
        for b in equal_compute.budgets(run, None, equal_compute.AUDIO_FACTORS, equal_compute.AUDIO_KNOBS, "audio"):
            label = run.name if b.factor == 1.0 else b.run.name
            meta[label] = {"base": run.name, "knob": b.knob, "value": b.value, "factor": b.factor}
            if b.factor != 1.0:
                extra.append(b.run)
    return extra, meta


def budget_chunk_rows(chunks: Sequence[dict[str, Any]], budgets: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-chunk rows of the budget runs in the equal-compute form (``sampler``: the run scaled, ``budget``: the
    knob's value, ``budget_label``), scored chunks only."""
    out = []
    for c in chunks:
        b = budgets.get(c["sampler"])
        if b is not None and c["si_sdri_mean"] is not None:
            label = equal_compute.budget_label(b["knob"], b["value"], b["factor"])
            out.append({**c, "sampler": b["base"], "budget": b["value"], "budget_label": label})
    return out


def matched_seconds_section(document: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """With ``--equal-compute``: the reference run minus each sampler at matched seconds per chunk
    (:func:`~mgdm_audio.benchmarks.equal_compute.matched_section`), Markdown and JSON; empty without budgets."""
    budgets, reference = document["info"].get("budgets"), document["info"].get("reference")
    if not budgets or reference not in {b["base"] for b in budgets.values()}:
        return "", {}
    rows = budget_chunk_rows(document["chunks"], budgets)
    return equal_compute.matched_section(
        rows,
        "si_sdri_mean",
        reference,
        lambda r: r["chunk_id"],
        "dB",
        digits=2,
        items="chunks",
        higher_is_better=True,
    )


# ============================================================================================ chunks
@dataclass(frozen=True)
class Chunk:
    """A test chunk: its track name, start sample and position in the dataset (stems are read when needed)."""

    track: str
    start: int
    position: int

    @property
    def chunk_id(self) -> str:
        return f"{self.track}:{self.start}"


def silence_db_for(chunk_samples: int) -> float:
    """MSDM's ``||s||_2 / N < 1.5e-5`` for an ``N``-sample chunk as an RMS threshold in dB:
    ``20 log10(1.5e-5 sqrt N)``."""
    return 20.0 * math.log10(SILENCE_THRESHOLD * math.sqrt(chunk_samples))


def open_dataset(root: Path, layout: str, split: str, stems: Sequence[str], sample_rate: int, chunk_samples: int):
    """The sequential, MSDM-filtered chunk dataset of a split (one clear error for a wrong root or layout)."""
    from mgdm_audio.audio.data.readers import MusdbDataset, SlakhDataset

    common = dict(
        stems=tuple(stems),
        sample_rate=sample_rate,
        chunk_samples=chunk_samples,
        mode="sequential",
        min_active_stems=MIN_ACTIVE_STEMS,
        silence_db=silence_db_for(chunk_samples),
    )
    if layout == "slakh":
        return SlakhDataset(root, split, **common)
    if layout == "musdb":
        return MusdbDataset(root, split, **common)
    raise UserInputError(f"--layout must be one of {', '.join(LAYOUT_STEMS)}, got {layout!r}.")


def benchmark_chunk_samples(prior: Any, chunk_seconds: float | None = None) -> int:
    """The benchmark chunk length in samples.

    Default: the prior's chunk when it holds a whole 4 s scoring window, else the fewest whole prior chunks that
    do (a 1.49 s prior chunk gives 3 chunks = 4.46 s: a chunk of 2 s or less has no scoring window at all).
    ``chunk_seconds`` (``--chunk-seconds``) overrides it, rounded up to the prior's length multiple; it must
    exceed the 2 s window overlap. The separator always runs on the prior's own segment length and streams
    longer chunks with overlap, exactly as ``mgdm-audio separate`` does.
    """
    sr, per = int(prior.sample_rate), int(prior.chunk_samples)
    window, overlap, _ = window_lengths(sr)
    if chunk_seconds is None:
        return per * max(1, math.ceil(window / per))
    if not (chunk_seconds > 0 and math.isfinite(chunk_seconds)):
        raise UserInputError(f"--chunk-seconds must be a positive number of seconds, got {chunk_seconds}.")
    multiple = int(getattr(prior, "downsampling", 1))
    samples = max(multiple, multiple * math.ceil(chunk_seconds * sr / multiple))
    if samples <= overlap:
        raise UserInputError(
            f"--chunk-seconds {chunk_seconds:g} leaves no SI-SDR scoring window (4 s windows, 2 s hop); "
            "use more than 2 s (4 s or more for one whole window)."
        )
    return samples


def check_layout(root: Path, split: str, layout: str) -> None:
    """One clear error when the split's track folders look like the other layout (the readers would otherwise read
    a MUSDB folder as a Slakh one with missing stems, or the reverse): MUSDB has ``mixture``/``vocals`` files or
    ``.stem.mp4`` tracks, Slakh has ``guitar``/``piano`` files or ``stems/`` + ``metadata.yaml``."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        return  # the reader names the missing folder
    names: set[str] = {p.name for p in split_dir.iterdir() if p.is_file()}
    for folder in (p for p in split_dir.iterdir() if p.is_dir()):
        names.update(p.stem if p.is_file() else f"{p.name}/" for p in folder.iterdir())
    musdb = bool({"mixture", "vocals"} & names) or any(n.endswith(".stem.mp4") for n in names)
    slakh = bool({"guitar", "piano", "metadata", "stems/"} & names)
    if layout == "slakh" and musdb and not slakh:
        raise UserInputError(
            f"{split_dir} looks like MUSDB18 (mixture/vocals files), not a Slakh layout; use --layout musdb."
        )
    if layout == "musdb" and slakh and not musdb:
        raise UserInputError(
            f"{split_dir} looks like a Slakh layout (guitar/piano stems or metadata.yaml), not MUSDB18; "
            "use --layout slakh."
        )


def chunk_order(chunk_index: Sequence[tuple[str, int]], seed: int) -> list[int]:
    """Dataset positions in the benchmark's order: tracks shuffled, each track's chunks shuffled, then round-robin
    over tracks (seeded; independent of how many chunks are taken)."""
    rng = random.Random(seed)
    by_track: dict[str, list[int]] = defaultdict(list)
    for position, (track, _) in enumerate(chunk_index):
        by_track[track].append(position)
    tracks = sorted(by_track)
    rng.shuffle(tracks)
    queues = []
    for track in tracks:
        positions = list(by_track[track])
        rng.shuffle(positions)
        queues.append(positions)
    order = []
    for k in range(max((len(q) for q in queues), default=0)):
        order.extend(q[k] for q in queues if k < len(q))
    return order


def select_chunks(dataset: Any, max_chunks: int | None, seed: int) -> list[Chunk]:
    """The first ``max_chunks`` chunks (all if None) of :func:`chunk_order` (no audio is read here)."""
    order = chunk_order(dataset.chunk_index, seed)
    if max_chunks is not None:
        order = order[:max_chunks]
    chunks = []
    for position in order:
        track, start = dataset.chunk_index[position]
        chunks.append(Chunk(track, int(start), int(position)))
    return chunks


def chunk_seed(seed: int, chunk: Chunk) -> int:
    """The sampler seed on a chunk, the same for every sampler: ``(seed + crc32("track:start")) mod 2^31``."""
    return (int(seed) + zlib.crc32(chunk.chunk_id.encode())) % (2**31)


# ============================================================================================ scoring
def score_chunk(
    run: RunSpec,
    chunk: Chunk,
    references: torch.Tensor,
    estimates: torch.Tensor,
    stems: Sequence[str],
    sample_rate: int,
    cost: dict[str, Any],
    seed: int,
    bsseval: bool,
) -> list[dict[str, Any]]:
    """The rows of one (run, chunk): SI-SDRi (both variants), optional BSSEval SDR, and the cost."""
    result = si_sdri_windows(estimates, references, sample_rate)
    sdr: list[float | None] = [None] * len(stems)
    if bsseval:
        from mgdm_audio.metrics.bsseval import bss_eval

        bss = bss_eval(references, estimates, sample_rate)
        sdr = [finite_or_none(v) for v in bss.sdr]  # NaN (silent) and +inf (zero error) are stored as null
    rows = []
    for k, stem in enumerate(stems):
        rows.append(
            {
                "sampler": run.name,
                "method": run.sampler,
                "preset": run.preset,
                "overrides": run.overrides_dict,
                "track": chunk.track,
                "chunk": chunk.start,
                "stem": stem,
                "si_sdri": finite_or_none(result.msdm[k]),
                "si_sdri_nonsilent": finite_or_none(result.exclude_silent[k]),
                "n_windows": int(result.n_kept[k]),
                "n_windows_nonsilent": int(result.n_kept_exclude_silent[k]),
                "sdr": sdr[k],
                "nfe": int(cost.get("nfe", 0)),
                "vjp": int(cost.get("vjp", 0)),
                "seconds": round(float(cost.get("seconds", 0.0)), 4),
                "seed": seed,
            }
        )
    return rows


def oracle_estimates(
    name: str, references: torch.Tensor, wiener_psd: torch.Tensor | None = None, seed: int = 0
) -> torch.Tensor:
    """``irm`` / ``ibm`` / ``mixture`` estimates ``(S, T)`` from the true stems; ``wiener`` and ``wiener-sample``
    from their sum only (with the train-split stem spectra ``wiener_psd``; the sample is drawn with ``seed``)."""
    if name in BASELINES:
        if wiener_psd is None:
            raise InternalError(f"the {name} baseline needs the train split's stem spectra (prepare() fits them).")
        if name == "wiener-sample":
            generator = torch.Generator().manual_seed(seed)
            return wiener_posterior_sample(references.sum(0), wiener_psd, generator)
        return wiener_separation(references.sum(0), wiener_psd)
    if name == "irm":
        return ideal_ratio_mask(references)
    if name == "ibm":
        return ideal_binary_mask(references)
    return mixture_baseline(references)


# ============================================================================================ engine
@dataclass
class BenchmarkSetup:
    """Everything validated before any work: the prior, the dataset and its chosen chunks, one ready separator per
    sampler run."""

    prior: Any
    prior_name: str
    runs: list[RunSpec]
    dataset: Any
    chunks: list[Chunk]
    separators: dict[str, Any]
    chunk_samples: int
    info: dict[str, Any]
    wiener_psd: torch.Tensor | None = None

    def references(self, chunk: Chunk) -> torch.Tensor:
        """The reference stems ``(S, T)`` of a chunk, float32 (read from disk)."""
        return self.dataset[chunk.position].float()


def prepare(
    root: str | Path,
    layout: str,
    split: str,
    prior: str | Path | Any,
    runs: Sequence[RunSpec],
    max_chunks: int | None = None,
    seed: int = 0,
    chunk_seconds: float | None = None,
    device: str = "auto",
    init: str | Path | Any = None,
) -> BenchmarkSetup:
    """Load and check everything (prior, stems, dataset layout, samplers, the ``init`` separator) before any
    separation starts."""
    from mgdm_audio.audio.priors import display_name, load_prior
    from mgdm_audio.audio.separator import DISCRIMINATIVE, Separator, check_same_stems

    if layout not in LAYOUT_STEMS:
        raise UserInputError(f"--layout must be one of {', '.join(LAYOUT_STEMS)}, got {layout!r}.")
    if max_chunks is not None and max_chunks < 1:
        raise UserInputError(f"--max-chunks must be at least 1, got {max_chunks}.")
    dev = resolve_device(device)
    model = load_prior(prior, dev) if isinstance(prior, str | Path) else prior
    prior_name = display_name(model)
    wanted = LAYOUT_STEMS[layout]
    if set(model.stems) != set(wanted):
        raise UserInputError(
            f"prior '{prior_name}' separates {', '.join(model.stems)} but a {layout} dataset has the stems "
            f"{', '.join(wanted)}; use a prior trained on {layout} stems (or the other --layout)."
        )
    chunk_samples = benchmark_chunk_samples(model, chunk_seconds)
    check_layout(Path(root), split, layout)
    dataset = open_dataset(Path(root), layout, split, model.stems, model.sample_rate, chunk_samples)
    if len(dataset) == 0:
        raise UserInputError(
            f"no {chunk_samples / model.sample_rate:.2f} s chunk of {Path(root) / split} has at least "
            f"{MIN_ACTIVE_STEMS} active stems; use longer tracks or a smaller --chunk-seconds."
        )
    estimator = None
    if init is not None:
        from mgdm_audio.audio.discriminative import load_separator

        estimator = load_separator(init, dev) if isinstance(init, str | Path) else init
        check_same_stems(estimator, model)  # the rows score its stems against the prior's stem order
    separators = {}
    for run in runs:
        if is_oracle(run):
            continue
        overrides = run.overrides_dict
        n_samples = overrides.pop(N_SAMPLES_KEY, 1)
        if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
            raise UserInputError(f"{run.name}: {N_SAMPLES_KEY} must be a positive integer, got {n_samples!r}.")
        init_sigma = overrides.pop(INIT_SIGMA_KEY, None)
        uses_init = run.sampler == DISCRIMINATIVE or init_sigma is not None
        if uses_init and estimator is None:
            raise UserInputError(f"{run.name}: runs the discriminative separator; give it with --init EXPORT.")
        separators[run.name] = Separator(  # the prior's own segment length, as `mgdm-audio separate` uses it
            model,
            sampler=run.sampler,
            preset=run.preset,
            device=dev,
            seed=seed,
            n_samples=n_samples,
            sampler_overrides=overrides,
            # two even chunks per network batch, as when the committed tables were made: the batch layout decides
            # which random numbers each chunk draws, so pinning it keeps those tables reproducible (the separator's
            # default, 4, is faster on CPU and samples the same posterior)
            batch_chunks=BENCHMARK_BATCH_CHUNKS,
            init=estimator if uses_init else None,
            init_sigma=init_sigma,
        )
    chunks = select_chunks(dataset, max_chunks, seed)
    wiener_psd = None
    if any(run.sampler in BASELINES for run in runs):
        wiener_psd = fit_wiener_psd(Path(root), layout, model, chunk_samples, seed)
    info = {
        "prior": prior_name,
        "weights_sha256": str(getattr(model, "weights_sha256", "")),
        "root": str(root),
        "layout": layout,
        "split": split,
        "stems": list(model.stems),
        "sample_rate": int(model.sample_rate),
        "chunk_samples": chunk_samples,
        "chunk_seconds": chunk_samples / model.sample_rate,
        "segment_samples": int(model.chunk_samples),
        "chunks_available": len(dataset),
        "chunks": len(chunks),
        "tracks": len({c.track for c in chunks}),
        "seed": seed,
        "device": str(dev),
        "min_active_stems": MIN_ACTIVE_STEMS,
    }
    if wiener_psd is not None:
        info["wiener_psd_sha256"] = psd_sha256(wiener_psd)
    if estimator is not None:
        info["init"] = {"name": display_name(estimator), "weights_sha256": estimator.weights_sha256}
    return BenchmarkSetup(model, prior_name, list(runs), dataset, chunks, separators, chunk_samples, info, wiener_psd)


def psd_sha256(psd: torch.Tensor) -> str:
    return hashlib.sha256(psd.double().contiguous().numpy().tobytes()).hexdigest()


def fit_wiener_psd(root: Path, layout: str, model: Any, chunk_samples: int, seed: int) -> torch.Tensor:
    """The ``wiener`` baseline's stem spectra: Welch PSDs of up to 256 seeded chunks of ``ROOT/train`` (the data
    a prior is trained on; never the evaluated split). One clear error when there is no train split."""
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise UserInputError(
            f"the wiener baseline fits stem spectra on {train_dir}, which does not exist; add the train split or "
            "pass --no-oracles (which also skips irm / ibm / mixture)."
        )
    check_layout(root, "train", layout)
    train = open_dataset(root, layout, "train", model.stems, model.sample_rate, chunk_samples)
    if len(train) == 0:
        raise UserInputError(f"{train_dir} has no usable chunk to fit the wiener baseline's stem spectra.")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:WIENER_TRAIN_CHUNKS]
    chunks = torch.stack([train[int(i)].float() for i in order.sort().values])
    return welch_psd(chunks, min(WIENER_BINS, chunk_samples // 2 + 1))


def cell_key(setup: BenchmarkSetup, run: RunSpec, chunk: Chunk) -> dict[str, Any]:
    """Every value a (run, chunk) result depends on: the resolved sampler config and separator settings (or the
    oracle and the baseline's spectra), the prior's weights, the dataset chunk and the seed."""
    info = setup.info
    separator = setup.separators.get(run.name)
    method: dict[str, Any]
    if separator is None:
        baseline = info.get("wiener_psd_sha256", "") if run.sampler in BASELINES else ""
        method = {"oracle": run.sampler, "baseline": baseline}
    else:
        method = {
            **separator.run_key(),
            "n_samples": separator.n_samples,
            "batch_chunks": separator.batch_chunks,
            "segment": [separator.plan.chunk, separator.plan.overlap],
            "prior": info["weights_sha256"] or setup.prior_name,
        }
    return {
        "engine": "separation",
        "version": ENGINE_VERSION,
        **method,
        "data": [info["root"], info["layout"], info["split"], info["stems"], info["sample_rate"]],
        "chunk_samples": setup.chunk_samples,
        "chunk": chunk.chunk_id,
        "seed": chunk_seed(int(info["seed"]), chunk),
    }


def prepare_and_run(
    root: str | Path,
    layout: str,
    split: str,
    prior: str | Path | Any,
    runs: Sequence[RunSpec],
    *,
    max_chunks: int | None,
    seed: int,
    chunk_seconds: float | None,
    device: str,
    init: str | Path | Any = None,
    cache: str | Path | None = None,
    bsseval: bool = False,
    progress: bool = True,
) -> tuple[BenchmarkSetup, list[dict[str, Any]] | None]:
    """:func:`prepare` then :func:`run_benchmark`, sharded over the ``torchrun`` processes when there are several (the
    chunks dealt to the ranks, each on its own device; rank 0 merges the results, the other ranks get ``None`` rows)."""
    shard = torchrun_shard(cache)
    setup = prepare(
        root,
        layout,
        split,
        prior,
        runs,
        max_chunks=max_chunks,
        seed=seed,
        chunk_seconds=chunk_seconds,
        device=str(device_for_rank(device, shard)),
        init=init,
    )
    rows = run_benchmark(
        setup,
        cache=cache_file(cache),
        bsseval=bsseval,
        progress=progress and shard.rank == 0,
        rank=shard.rank,
        world_size=shard.world,
        barrier=shard.barrier,
    )
    return setup, rows


def run_benchmark(
    setup: BenchmarkSetup,
    cache: Path | None = None,
    bsseval: bool = False,
    progress: bool = True,
    on_result: Callable[[RunSpec, Chunk], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
) -> list[dict[str, Any]] | None:
    """Every run on every chunk (cached results reused, new ones appended), rows in (run, chunk, stem) order.

    Sharding (``torchrun``: ``rank`` / ``world_size`` > 1): the harness deals the chunks to the ranks, rank 0
    merges every rank's cache and returns all rows; the other ranks return None.
    """
    if not 0 <= rank < world_size:
        raise UserInputError(f"rank {rank} is outside a world of {world_size} processes.")
    if bsseval:
        from mgdm_audio.metrics.bsseval import require_museval

        require_museval()  # one clear error before any work
    stems, sr = tuple(setup.prior.stems), int(setup.prior.sample_rate)
    cells = [RunCell(r, c, cell_key(setup, r, c), group=c.chunk_id) for c in setup.chunks for r in setup.runs]

    def compute(group: list[RunCell[Chunk]]) -> list[list[dict[str, Any]]]:
        references = setup.references(group[0].item)  # read once per chunk, only when something is left to do
        out = []
        for cell in group:
            out.append(_compute(setup, cell.run, cell.item, references, stems, sr, bsseval))
            if on_result is not None:
                on_result(cell.run, cell.item)
        return out

    results = run_cells(
        cells,
        compute,
        cache,
        accept=lambda rows: not bsseval or all(r.get("sdr_computed") for r in rows),
        shard=Shard(rank, world_size, barrier),
        progress=progress,
        desc="separation benchmark",
        status=lambda cell: f"{cell.run.name} {cell.group}",
    )
    if results is None:
        return None
    by_cell = {(c.run.name, c.group): rows for c, rows in zip(cells, results, strict=True)}
    rows: list[dict[str, Any]] = []
    for run in setup.runs:
        for chunk in setup.chunks:
            for row in by_cell[(run.name, chunk.chunk_id)]:
                out = {k: v for k, v in row.items() if k != "sdr_computed"}
                out["sampler"] = run.name  # the cache is keyed by the configuration, the label is this table's
                out["chunk_id"] = chunk.chunk_id
                rows.append(out)
    return rows


def _compute(
    setup: BenchmarkSetup,
    run: RunSpec,
    chunk: Chunk,
    references: torch.Tensor,
    stems: Sequence[str],
    sr: int,
    bsseval: bool,
) -> list[dict[str, Any]]:
    this_seed = chunk_seed(int(setup.info["seed"]), chunk)
    if is_oracle(run):
        start = time.perf_counter()
        estimates = oracle_estimates(run.sampler, references, setup.wiener_psd, this_seed)
        cost = {"nfe": 0, "vjp": 0, "seconds": time.perf_counter() - start}
    else:
        separator = setup.separators[run.name]
        separator.seed = this_seed
        result = separator.separate_tensor(references.sum(0), sr)
        estimates = result.stems[:, 0]  # (S, 1, T): a mono chunk at the prior's rate
        cost = {"nfe": result.info["nfe"], "vjp": result.info["vjp"], "seconds": result.info["seconds"]}
    rows = score_chunk(run, chunk, references, estimates.float(), stems, sr, cost, this_seed, bsseval)
    for row in rows:
        row["sdr_computed"] = bsseval
    return rows


# ============================================================================================ summary
def _pooled_mean(rows: Sequence[dict[str, Any]], value: str, count: str) -> float | None:
    """Mean over all windows of all chunks: ``sum_c mean_c n_c / sum_c n_c`` (MSDM's pooled aggregation)."""
    num = den = 0.0
    for r in rows:
        if r[value] is not None and r[count] > 0:
            num += r[value] * r[count]
            den += r[count]
    return num / den if den > 0 else None


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else 0.5 * (v[mid - 1] + v[mid])


def _average(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept and len(kept) == len(values) else None


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per run: pooled SI-SDRi per stem and average (both variants), median SDR per stem, cost per chunk."""
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_run[row["sampler"]].append(row)
    summary = {}
    for name, rs in by_run.items():
        stems = list(dict.fromkeys(r["stem"] for r in rs))
        per_chunk = {(r["track"], r["chunk"]): r for r in rs}  # one row per chunk for the cost
        si = {s: _pooled_mean([r for r in rs if r["stem"] == s], "si_sdri", "n_windows") for s in stems}
        si_ns = {
            s: _pooled_mean([r for r in rs if r["stem"] == s], "si_sdri_nonsilent", "n_windows_nonsilent")
            for s in stems
        }
        sdr = {s: _median([r["sdr"] for r in rs if r["stem"] == s and r["sdr"] is not None]) for s in stems}
        n = len(per_chunk)
        summary[name] = {
            "method": rs[0]["method"],
            "preset": rs[0]["preset"],
            "overrides": rs[0]["overrides"],
            "chunks": n,
            "si_sdri": si,
            "si_sdri_average": _average(list(si.values())),
            "si_sdri_nonsilent": si_ns,
            "si_sdri_nonsilent_average": _average(list(si_ns.values())),
            "sdr_median": sdr,
            "sdr_average": _average(list(sdr.values())),
            "nfe_per_chunk": sum(r["nfe"] for r in per_chunk.values()) / n,
            "vjp_per_chunk": sum(r["vjp"] for r in per_chunk.values()) / n,
            "seconds_per_chunk": sum(r["seconds"] for r in per_chunk.values()) / n,
            "seconds_total": sum(r["seconds"] for r in per_chunk.values()),
        }
    return summary


def markdown_report(document: dict[str, Any], stems: Sequence[str]) -> str:
    """The results table (SI-SDRi per stem and average, the non-silent average, SDR, NFE, VJP and wall time), then
    the paired differences and the equal-compute table."""
    summary, info = document["summary"], document["info"]
    lines = [
        f"## Separation benchmark: prior `{info['prior']}` on {info['layout']} `{info['split']}`",
        "",
        f"{info['chunks']} chunks of {info['chunk_seconds']:.2f} s from {info['tracks']} tracks "
        f"({info['chunks_available']} chunks with at least {info['min_active_stems']} active stems available), "
        f"chunk order and sampler seeds from seed {info['seed']} (every sampler gets the same seed on a chunk), "
        f"device {info['device']}.",
        "",
        "SI-SDRi (dB, higher is better): MSDM's protocol (4 s windows, 2 s hop, windows with fewer than two active "
        "reference stems skipped, silent stems of kept windows still scored), mean over all kept windows. "
        "*non-silent*: the same average with each stem's own silent windows left out. SDR: BSSEval v4 (museval, "
        "1 s frames), median over frames then over chunks ('–' when not computed). NFE, VJP and seconds per chunk. "
        "Oracles (true stems): irm, ibm, mixture (0 dB). Baselines without true stems, stationary Gaussian stems "
        "with the train split's spectra"
        + (f" (sha256 `{info['wiener_psd_sha256'][:12]}`)" if info.get("wiener_psd_sha256") else "")
        + ": wiener (posterior mean) and wiener-sample (one exact posterior sample). A sampler row is one "
        "posterior sample too, unless its overrides set n_samples: then the mean of that many samples is scored.",
        "",
        "| sampler | preset | " + " | ".join(stems) + " | average | non-silent avg | SDR avg | NFE | VJP | s/chunk |",
        "|---|---|" + "---|" * (len(stems) + 6),
    ]
    for name, s in summary.items():
        preset = s["preset"] + ("" if not s["overrides"] else " " + json.dumps(s["overrides"], sort_keys=True))
        cells = " | ".join(fmt(s["si_sdri"].get(stem)) for stem in stems)
        lines.append(
            f"| {name} | {preset} | {cells} | {fmt(s['si_sdri_average'])} | "
            f"{fmt(s['si_sdri_nonsilent_average'])} | {fmt(s['sdr_average'])} | {s['nfe_per_chunk']:.0f} | "
            f"{s['vjp_per_chunk']:.0f} | {s['seconds_per_chunk']:.2f} |"
        )
    total = sum(s["seconds_total"] for s in summary.values())
    lines += ["", f"Total separation and scoring wall time: {total:.1f} s.", ""]
    if info.get("reference"):
        lines += [f"Reference run of the paired differences: {info['reference']}.", ""]
    lines += separation_stats.markdown_sections(document["levels"], document["paired_differences"])
    matched = matched_seconds_section(document)[0]
    return "\n".join(lines) + ("\n" + matched if matched else "")


def plot_equal_compute(document: dict[str, Any], path: Path) -> None:
    """Mean per-chunk SI-SDRi (t 95 % error bars) against seconds and against NFE + VJP per chunk (PNG,
    :func:`~mgdm_audio.benchmarks.separation_stats.plot_equal_compute`): a run and its ``--equal-compute`` budgets
    joined in cost order, else the runs of one sampler (e.g. MGDM's Gibbs sweeps; means of K samples and warm starts
    on a line of their own),
    the IRM/IBM ceilings and the learning-free baselines as horizontal lines."""
    styles = {
        "irm": ("--", "gray", 0.01),
        "ibm": (":", "black", 0.12),
        "wiener": ("-.", "tab:green", 0.23),
        "wiener-sample": ("-.", "tab:olive", 0.45),
    }
    groups, lines = {}, {}
    budgets = document["info"].get("budgets", {})
    for name, s in document["summary"].items():
        if s["preset"] in (ORACLE_PRESET, BASELINE_PRESET):
            if name in styles:  # the mixture is the 0 dB line
                lines[name] = styles[name]
            continue
        k = s["overrides"].get(N_SAMPLES_KEY, 1)  # means of K samples are another estimator: their own line
        warm = " warm-started" if INIT_SIGMA_KEY in s["overrides"] else ""  # so are warm starts
        # --equal-compute: a run and its budgets make one curve (two presets of one sampler, two curves); else the
        # runs of one sampler share a curve (e.g. MGDM at R = 1, 2, 4 Gibbs sweeps given as --sampler-set runs)
        base = budgets[name]["base"] if name in budgets else s["method"]
        groups[name] = base + warm + ("" if k == 1 else " (mean of K samples)")
    separation_stats.plot_equal_compute(document["levels"], groups, lines, path)


def payload(rows: list[dict[str, Any]], info: dict[str, Any], reference: str | None = None) -> dict[str, Any]:
    """The JSON document: ``{"info", "rows", "summary", "chunks", "levels", "paired_differences"}``: the per-stem
    rows, their pooled summary, one row per (run, chunk), each run's per-chunk mean SI-SDRi with its t interval and
    cost, and the paired differences (:mod:`~mgdm_audio.benchmarks.separation_stats`) of every sampler run against
    ``reference`` (default: the first sampler run) and against the ``wiener``, ``wiener-sample`` and ``mixture``
    baselines that ran."""
    summary = summarise(rows)
    scaled = {label for label, b in info.get("budgets", {}).items() if b["factor"] != 1.0}
    samplers = [n for n, s in summary.items() if s["preset"] not in (ORACLE_PRESET, BASELINE_PRESET)]
    if reference is not None and reference not in summary:
        raise UserInputError(f"--reference {reference!r} is not a run of this table ({', '.join(summary)}).")
    reference = reference if reference is not None else (samplers[0] if samplers else None)
    baselines = [b for b in ("wiener", "wiener-sample", "mixture") if b in summary]
    chunks = separation_stats.chunk_rows(rows)
    pairs = separation_stats.comparison_pairs([n for n in samplers if n not in scaled], reference, baselines)
    document = {
        "info": {**info, "reference": reference},
        "rows": rows,
        "summary": summary,
        "chunks": chunks,
        "levels": separation_stats.run_levels(chunks),
        "paired_differences": separation_stats.paired_differences(chunks, pairs),
    }
    matched = matched_seconds_section(document)[1]
    if matched:
        document["equal_compute"] = {"budgets": info["budgets"], "matched": matched}
    return document


# ============================================================================================ command line
PLOT = "plot mean SI-SDRi per chunk (t 95 %% CI) against seconds and against NFE + VJP per chunk"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``mgdm-audio benchmark separation`` flags."""
    parser.add_argument("--root", required=True, help="dataset root holding the split folder")
    parser.add_argument("--layout", required=True, choices=["slakh", "musdb"], help="dataset layout")
    parser.add_argument("--split", default="test", help="split (slakh) or subset (musdb) folder name")
    parser.add_argument("--prior", default="slakh-style-small", help="shipped prior name or export folder")
    parser.add_argument("--samplers", default="mgdm,msdm,dps", metavar="A,B", help="registry samplers at --preset")
    parser.add_argument("--preset", default="fast", help="fast | default | paper | tuned, or a sampler preset")
    parser.add_argument(
        "--sampler-set",
        metavar="NAME=S:P:k=v,...",
        help="extra labelled runs, e.g. mgdm-R2=mgdm:fast:n_reps=2,dps-400=dps:fast:n_steps=400",
    )
    parser.add_argument(
        "--no-oracles", action="store_true", help="skip the irm / ibm / mixture oracles and the wiener baseline"
    )
    parser.add_argument(
        "--max-chunks", type=int, default=None, help="first N chunks of the seeded order (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="chunk order and per-chunk sampler seeds")
    parser.add_argument(
        "--reference",
        metavar="RUN",
        help="run every other sampler run is compared with in the paired differences (default: the first sampler run)",
    )
    parser.add_argument("--chunk-seconds", type=float, default=None, help="chunk length (default: the prior's)")
    parser.add_argument("--bsseval", action="store_true", help="also BSSEval v4 SDR via museval (needs ffmpeg)")
    parser.add_argument(
        "--init", default=None, help="discriminative separator export: the run `demucs`, and runs with init_sigma=S"
    )
    parser.add_argument(
        "--equal-compute",
        action="store_true",
        help="also run every cold one-sample sampler run at x0.25 and x0.5 its cost knob (steps, annealing levels, "
        "iterations) and compare it with --reference at matched seconds per chunk (a section, and the plot's curves)",
    )
    parser.add_argument("-d", "--device", default="auto", help="auto | cpu | cuda")


def run(args: argparse.Namespace) -> Report | None:
    """``mgdm-audio benchmark separation``: every check before any work, the chunks (sharded under torchrun)."""
    samplers = [s.strip() for s in (args.samplers or "").split(",") if s.strip()]
    runs = make_runs(samplers, args.preset, args.sampler_set, oracles=not args.no_oracles)
    if not runs:
        raise UserInputError("nothing to run: give --samplers and/or --sampler-set (or drop --no-oracles).")
    budgets: dict[str, dict[str, Any]] = {}
    if args.equal_compute:
        extra, budgets = budget_runs(runs)
        runs = runs + extra
        check_unique(runs, "sampler names in the table (with the equal-compute budgets)")
    if args.reference is not None and args.reference not in {r.name for r in runs}:
        raise UserInputError(
            f"--reference {args.reference!r} is not a run of this table ({', '.join(r.name for r in runs)})."
        )
    if args.bsseval:
        from mgdm_audio.metrics.bsseval import require_museval

        require_museval()
    setup, rows = prepare_and_run(
        args.root,
        args.layout,
        args.split,
        args.prior,
        runs,
        max_chunks=args.max_chunks,
        seed=args.seed,
        chunk_seconds=args.chunk_seconds,
        device=args.device,
        init=args.init,
        cache=args.cache,
        bsseval=args.bsseval,
        progress=not args.no_progress,
    )
    if rows is None:
        return None
    document = payload(rows, {**setup.info, "budgets": budgets} if budgets else setup.info, args.reference)
    text = markdown_report(document, setup.prior.stems)
    return Report(
        document,
        text,
        lambda path: plot_equal_compute(document, path),
        weights_sha256=setup.info["weights_sha256"] or None,
        device=setup.info["device"],
    )
