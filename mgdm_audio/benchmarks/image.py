r"""The image restoration benchmark: every sampler on every task, on the same held-out Fashion-MNIST test images.

Images: the first ``N`` images of a permutation of the Fashion-MNIST ``test`` split (the 10,000 ``t10k`` images,
never used for training or for choosing settings) drawn with ``torch.randperm`` from a generator seeded with
``seed``; zero-padded to 32x32 and mapped to ``[-1, 1]`` by :func:`mgdm_audio.image.data.load_fashion_mnist`, then
fitted to the prior's ``image_shape`` (:func:`fit_to_shape`: the 28x28 content centred in a larger canvas,
resampled for a smaller one, grey copied to 3 channels for an RGB prior).

Per task (:data:`mgdm_audio.image.operators.TASKS`): one measurement per image
``y = A(x) + sigma_y z``, ``sigma_y = 0.05``, with ``z`` seeded by ``derive_seed(seed, "measure", task)``
(:func:`mgdm_audio.image.solve.measure`), so every sampler sees the same ``y``. Per sampler run: when
:func:`mgdm_audio.image.solve.sampler_applicable` gives a reason, one row with ``status: "n/a"`` and that reason;
else :func:`mgdm_audio.image.solve.solve` on the ``N`` measurements as one batch (or chunks of ``batch``), one
posterior sample per image, seeded by ``derive_seed(seed, "sample", task, sampler, first_image)``. Per image a row::

    {"status": "ok", "task", "sampler", "method", "preset", "overrides", "image", "psnr", "ssim", ["lpips"],
     "nfe", "vjp", "seconds"}

``image`` is the index in the ``t10k`` file; PSNR and SSIM (:mod:`mgdm_audio.metrics.image`, on ``[0, 1]``) of the
sample against the clean image; LPIPS only when :func:`mgdm_audio.metrics.image.lpips_available` (grey copied to
3 channels; ``None`` for images too small for AlexNet); ``nfe`` / ``vjp``: network evaluations and
vector-Jacobian products per chain; ``seconds``: the chunk's sampler wall time divided by its number of images.

Ranking (:func:`average_ranks`): within a task, the runs that apply are ranked by mean PSNR (or SSIM), 1 = best,
tied means share the average of the ranks they span; a run's average rank is the mean over the tasks where it
applies ("k of T" tasks), n/a tasks are left out (not counted as last).

Intervals (:func:`bootstrap_ranks`): a seeded percentile bootstrap over the images gives each average rank a 95 %
interval and the share of resamples in which each run has the best average rank.

Resumable through the harness cache (:mod:`mgdm_audio.benchmarks.harness`): each finished batch of a (task, run) is
a cache line keyed by everything it depends on (:func:`cell_key`: the resolved sampler config, prior weights, the
images and their bytes, seeds, batch, sigma_y, device type), so a killed run recomputes only missing batches and a
changed setting never reuses stale rows.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mgdm_audio import __version__
from mgdm_audio.benchmarks.harness import (
    Report,
    cache_file,
    derive_seed,
    finite_or_none,
    fmt,
    mean_or_none,
    run_cells,
    tensor_sha256,
)
from mgdm_audio.core.atomic import save_figure_atomic
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import LinearOperator, Operator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.core.runtime import resolve_device
from mgdm_audio.image import solve as image_solve
from mgdm_audio.image.data import DEFAULT_ROOT, load_fashion_mnist
from mgdm_audio.image.operators import TASKS, make_operator
from mgdm_audio.image.priors import ImagePrior, load_image_prior
from mgdm_audio.image.tasks import KERNEL_WIZARD_HELP
from mgdm_audio.metrics.intervals import BOOTSTRAP_RESAMPLES, bootstrap_percentile, paired_on_common, plain_words
from mgdm_audio.samplers.run import RunSpec, parse_run_specs

SAMPLERS = ("mgdm", "dps", "pigdm", "diffpir", "ddrm", "reddiff", "daps", "pnpdm", "vml_map")
ENGINE_VERSION = 1
"""Part of every cache key: raise it when a change to this file changes the numbers of an unchanged cell."""
EXAMPLE_KEY = "example"
NA = "n/a"


# ============================================================================================ runs and tasks
def parse_samplers(text: str, preset: str = "fast") -> list[RunSpec]:
    """``--samplers``: comma-separated run specs ``[NAME=]sampler[:preset[:key=value...]]`` (the preset defaults to
    ``preset``; :func:`~mgdm_audio.samplers.run.parse_run_spec`).

    The label is ``NAME``, else ``sampler`` alone, else the whole entry when it names a preset or overrides.

    >>> [r.name for r in parse_samplers("mgdm,dps:paper,ddrm:fast:n_steps=5", "fast")]
    ['mgdm', 'dps:paper', 'ddrm:fast:n_steps=5']
    """
    runs = parse_run_specs(text, preset, "--samplers")
    if not runs:
        raise UserInputError("--samplers is empty; name at least one sampler (e.g. mgdm,dps).")
    return runs


def parse_tasks(text: str) -> list[str]:
    """``--tasks``: ``all`` or comma-separated task names (in the given order)."""
    if text.strip() == "all":
        return list(TASKS)
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise UserInputError(
            f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; "
            f"use 'all' or some of: {', '.join(TASKS)}."
        )
    return list(dict.fromkeys(tasks))


# ============================================================================================ images
def fit_to_shape(images: Tensor, image_shape: Sequence[int]) -> Tensor:
    """``(N, 1, 32, 32)`` padded Fashion-MNIST images fitted to ``(C, H, W)``.

    32x32 is kept; a canvas of at least 28x28 gets the 28x28 content centred on a black (``-1``) background; a
    smaller one is resampled from 32x32 (bilinear with antialiasing, clamped to ``[-1, 1]``). ``C = 3`` copies the
    grey channel; other channel counts are an error.
    """
    c, h, w = (int(s) for s in image_shape)
    if c not in (1, 3):
        raise UserInputError(f"the prior's images have {c} channels; Fashion-MNIST can fill 1 or 3.")
    if (h, w) != tuple(images.shape[-2:]):
        if h >= 28 and w >= 28:
            content = images[..., 2:30, 2:30]
            top, left = (h - 28) // 2, (w - 28) // 2
            images = F.pad(content, (left, w - 28 - left, top, h - 28 - top), value=-1.0)
        else:
            images = F.interpolate(images, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
            images = images.clamp(-1.0, 1.0)
    return images.expand(-1, c, -1, -1).contiguous()


def load_test_images(
    n_images: int, seed: int, image_shape: Sequence[int], root: str | Path = DEFAULT_ROOT, split: str = "test"
) -> tuple[list[int], Tensor]:
    """The first ``n_images`` of a seeded permutation of a Fashion-MNIST split: ``(indices in the split, images)``.

    ``test`` (the t10k images) for reported results; ``validation`` (train images 55,000..59,999, never trained
    on) for choosing sampler settings, so that nothing is tuned on the reported images."""
    if split not in ("test", "validation"):
        raise UserInputError(f"--split must be test or validation (never train images), got {split!r}.")
    images, _ = load_fashion_mnist(split, root, pad_to=32)
    total = images.shape[0]
    if not 1 <= n_images <= total:
        raise UserInputError(f"--n-images must be between 1 and {total} (the {split} split's size), got {n_images}.")
    order = torch.randperm(total, generator=make_generator(seed))[:n_images]
    return [int(i) for i in order], fit_to_shape(images[order], image_shape)


# ============================================================================================ setup
@dataclass
class BenchmarkSetup:
    """Everything checked before any sampling: the prior, tasks, runs, the clean images and the settings block."""

    prior: ImagePrior
    tasks: list[str]
    runs: list[RunSpec]
    indices: list[int]
    clean: Tensor
    seed: int
    batch: int
    device: torch.device
    settings: dict[str, Any]
    operators: dict[str, Operator] = field(default_factory=dict)


def prepare(
    prior: str | Path | ImagePrior,
    tasks: Sequence[str] | str = "all",
    samplers: Sequence[RunSpec] | str = ",".join(SAMPLERS),
    preset: str = "fast",
    n_images: int = 8,
    seed: int = 0,
    batch: int | None = None,
    data_root: str | Path = DEFAULT_ROOT,
    device: str = "auto",
    split: str = "test",
    kernel_wizard: str | Path | None = None,
) -> BenchmarkSetup:
    """Load the prior and the test images, check every task, sampler, preset and override (no sampling yet)."""
    task_list = parse_tasks(tasks) if isinstance(tasks, str) else list(tasks)
    runs = parse_samplers(samplers, preset) if isinstance(samplers, str) else list(samplers)
    for run in runs:  # one clear error for an unknown sampler, preset or setting, before any work
        image_solve.image_run(run.sampler, run.preset, run.overrides_dict)
    if batch is not None and batch < 1:
        raise UserInputError(f"--batch must be at least 1, got {batch}.")
    dev = resolve_device(device)
    model = load_image_prior(prior, dev) if isinstance(prior, str | Path) else prior.to(dev)
    indices, clean = load_test_images(n_images, seed, model.image_shape, data_root, split)
    operators = {task: make_operator(task, model.image_shape, kernel_wizard).to(dev) for task in task_list}
    chunk = min(batch or n_images, n_images)
    settings = {
        "prior": model.name,
        "prior_kind": model.kind,
        "weights_sha256": model.weights_sha256,
        "image_shape": list(model.image_shape),
        "sample_shape": list(model.sample_shape),
        "dataset": "fashion-mnist test (t10k)" if split == "test" else "fashion-mnist validation (train 55000..59999)",
        "n_images": n_images,
        "images": indices,
        "images_sha256": tensor_sha256(clean),
        "seed": seed,
        "sigma_y": image_solve.SIGMA_Y,
        "tasks": task_list,
        "samplers": [
            {
                "label": r.name,
                "sampler": r.sampler,
                "preset": r.preset,
                "sampler_preset": image_solve.sampler_preset(r.preset, r.sampler, model.kind),
                "overrides": r.overrides_dict,
            }
            for r in runs
        ],
        "batch": chunk,
        "posterior_samples_per_image": 1,
        "device": dev.type,
        "lpips": _lpips_available(),
        "nonlinear_blur": _nonlinear_blur_label(kernel_wizard),
        "versions": {"mgdm_audio": __version__, "torch": torch.__version__.split("+")[0]},
    }
    return BenchmarkSetup(model, task_list, runs, indices, clean.to(dev), seed, chunk, dev, settings, operators)


def _nonlinear_blur_label(kernel_wizard: str | Path | None) -> str:
    """Which ``nonlinear_blur`` operator ran: the stand-in, or the KernelWizard weights by file hash."""
    if kernel_wizard is None:
        return "stand-in (motion blur in linear light)"
    digest = hashlib.sha256(Path(kernel_wizard).read_bytes()).hexdigest()
    return f"bkse KernelWizard, weights sha256 {digest}"


def _lpips_available() -> bool:
    from mgdm_audio.metrics.image import lpips_available

    return bool(lpips_available())


# ============================================================================================ engine
@dataclass
class BenchmarkResult:
    """The rows (task, run, image order) and, for the plot, the first image's restoration per (task, run)."""

    rows: list[dict[str, Any]]
    examples: dict[tuple[str, str], Tensor | None]
    measurements: dict[str, Tensor]


def _lpips_scores(estimate: Tensor, reference: Tensor) -> list[float | None] | None:
    """LPIPS per image (grey copied to 3 channels), ``None`` when LPIPS is unavailable or the images are too small
    for AlexNet's pooling."""
    from mgdm_audio.metrics.image import lpips

    if estimate.shape[1] == 1:
        estimate, reference = estimate.expand(-1, 3, -1, -1), reference.expand(-1, 3, -1, -1)
    try:
        scores = lpips(estimate, reference)
    except RuntimeError:
        return [None] * estimate.shape[0]
    return None if scores is None else [finite_or_none(v, 6) for v in scores.tolist()]


def score_chunk(
    task: str,
    run: RunSpec,
    indices: Sequence[int],
    estimate: Tensor,
    clean: Tensor,
    cost: dict[str, Any],
    with_lpips: bool,
) -> list[dict[str, Any]]:
    """The ``ok`` rows of one chunk: PSNR, SSIM (and LPIPS) per image, and the cost per chain / per image."""
    from mgdm_audio.metrics.image import psnr, ssim

    estimate, clean = estimate.detach().float().cpu(), clean.detach().float().cpu()
    psnrs, ssims = psnr(estimate, clean).tolist(), ssim(estimate, clean).tolist()
    lpipss = _lpips_scores(estimate, clean) if with_lpips else None
    rows = []
    for k, index in enumerate(indices):
        row: dict[str, Any] = {
            "status": "ok",
            "task": task,
            "sampler": run.name,
            "method": run.sampler,
            "preset": run.preset,
            "overrides": run.overrides_dict,
            "image": int(index),
            "psnr": finite_or_none(psnrs[k], 6),
            "ssim": finite_or_none(ssims[k], 6),
        }
        if lpipss is not None:
            row["lpips"] = lpipss[k]
        row.update(nfe=int(cost["nfe"]), vjp=int(cost["vjp"]), seconds=round(float(cost["seconds"]) / len(indices), 5))
        rows.append(row)
    return rows


def na_row(task: str, run: RunSpec, reason: str) -> dict[str, Any]:
    """The single row of a (task, run) the sampler cannot handle."""
    return {
        "status": NA,
        "reason": reason,
        "task": task,
        "sampler": run.name,
        "method": run.sampler,
        "preset": run.preset,
        "overrides": run.overrides_dict,
        "image": None,
        "psnr": None,
        "ssim": None,
        "nfe": None,
        "vjp": None,
        "seconds": None,
    }


@dataclass(frozen=True)
class ImageCell:
    """One run on one batch of images of one task (its own group: a killed run keeps every finished batch)."""

    task: str
    run: RunSpec
    start: int
    stop: int
    key: dict[str, Any]

    @property
    def group(self) -> tuple[str, str, int]:
        return (self.task, self.run.name, self.start)


def cell_key(setup: BenchmarkSetup, task: str, run: RunSpec, start: int) -> dict[str, Any]:
    """Everything a batch's rows depend on: the resolved sampler, prior weights, images, seeds, batch, device."""
    s = setup.settings
    return {
        "engine": "image",
        "version": ENGINE_VERSION,
        **image_solve.image_run(run.sampler, run.preset, run.overrides_dict, setup.prior.kind).key(),
        "prior": s["weights_sha256"],
        "image_shape": s["image_shape"],
        "task": task,
        "images": s["images"],
        "images_sha256": s["images_sha256"],
        "seed": setup.seed,
        "batch": [start, setup.batch],
        "sigma_y": s["sigma_y"],
        "device": s["device"],
        "lpips": s["lpips"],
        "nonlinear_blur": s["nonlinear_blur"] if task == "nonlinear_blur" else "",
    }


def run_benchmark(setup: BenchmarkSetup, cache: Path | None = None, progress: bool = True) -> BenchmarkResult:
    """Every run on every task (finished batches reused from the harness cache file ``cache``), rows in
    (task, run, image) order; a run the sampler cannot apply to a task gives one ``n/a`` row."""
    n = len(setup.indices)
    starts = list(range(0, n, setup.batch))
    with_lpips = bool(setup.settings["lpips"])
    measurements: dict[str, Tensor] = {}
    ys: dict[str, Tensor] = {}
    for task in setup.tasks:
        op = setup.operators[task]
        ys[task] = image_solve.measure(op, setup.clean, image_solve.SIGMA_Y, derive_seed(setup.seed, "measure", task))
        measurements[task] = ys[task][:1].detach().cpu()
    reasons = {
        (task, run.name): image_solve.sampler_applicable(
            run.sampler, setup.operators[task], setup.prior, run.preset, **run.overrides_dict
        )
        for task in setup.tasks
        for run in setup.runs
    }
    cells = [
        ImageCell(task, run, start, min(start + setup.batch, n), cell_key(setup, task, run, start))
        for task in setup.tasks
        for run in setup.runs
        if reasons[(task, run.name)] is None
        for start in starts
    ]

    def compute(group: list[ImageCell]) -> list[list[dict[str, Any]]]:
        return [
            _compute_chunk(setup, c.task, c.run, setup.operators[c.task], ys[c.task], c.start, c.stop, with_lpips)
            for c in group
        ]

    results = run_cells(
        cells,
        compute,
        cache,
        progress=progress,
        desc="image benchmark",
        status=lambda cell: f"{cell.task} {cell.run.name}",
    )
    assert results is not None  # not sharded
    by_cell = {c.group: rows for c, rows in zip(cells, results, strict=True)}
    rows: list[dict[str, Any]] = []
    examples: dict[tuple[str, str], Tensor | None] = {}
    for task in setup.tasks:
        for run in setup.runs:
            reason = reasons[(task, run.name)]
            if reason is not None:
                rows.append(na_row(task, run, reason))
                examples[(task, run.name)] = None
                continue
            for start in starts:
                for row in by_cell[(task, run.name, start)]:
                    example = row.get(EXAMPLE_KEY)
                    if example is not None:
                        examples[(task, run.name)] = torch.tensor(example)
                    rows.append({**{k: v for k, v in row.items() if k != EXAMPLE_KEY}, "sampler": run.name})
    return BenchmarkResult(rows, examples, measurements)


def _compute_chunk(
    setup: BenchmarkSetup,
    task: str,
    run: RunSpec,
    op: Operator,
    y: Tensor,
    start: int,
    stop: int,
    with_lpips: bool,
) -> list[dict[str, Any]]:
    """One batch's rows; the first batch's first row also carries the restored image for the plot."""
    result = image_solve.solve(
        setup.prior,
        op,
        y[start:stop],
        sampler=run.sampler,
        preset=run.preset,
        n_samples=1,
        seed=derive_seed(setup.seed, "sample", task, run.sampler, start),
        sigma_y=image_solve.SIGMA_Y,
        **run.overrides_dict,
    )
    estimate = result.samples[:, 0]
    cost = {"nfe": result.nfe, "vjp": result.vjp, "seconds": result.seconds}
    rows = score_chunk(task, run, setup.indices[start:stop], estimate, setup.clean[start:stop], cost, with_lpips)
    if start == 0:
        rows[0][EXAMPLE_KEY] = [[[round(float(v), 4) for v in line] for line in plane] for plane in estimate[0].cpu()]
    return rows


# ============================================================================================ summary
def cell_means(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{sampler: {task: cell}}``: mean PSNR / SSIM / LPIPS over the images, NFE, VJP, seconds per image, or the
    ``n/a`` status and reason."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["sampler"], row["task"])].append(row)
    cells: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (sampler, task), rs in groups.items():
        if any(r.get("status") == NA for r in rs):
            cells[sampler][task] = {"status": NA, "reason": rs[0].get("reason", ""), "preset": rs[0]["preset"]}
            continue
        cell: dict[str, Any] = {
            "status": "ok",
            "preset": rs[0]["preset"],
            "images": len(rs),
            "psnr": mean_or_none([r["psnr"] for r in rs]),
            "ssim": mean_or_none([r["ssim"] for r in rs]),
            "nfe": max(r["nfe"] for r in rs),
            "vjp": max(r.get("vjp") or 0 for r in rs),
            "seconds_per_image": mean_or_none([r["seconds"] for r in rs]),
        }
        if any("lpips" in r for r in rs):
            cell["lpips"] = mean_or_none([r.get("lpips") for r in rs])
        cells[sampler][task] = cell
    return dict(cells)


def fractional_ranks(values: dict[str, float], higher_is_better: bool = True) -> dict[str, float]:
    """Rank 1 = best; equal values share the mean of the positions they span (``{a: 5, b: 5, c: 1}`` ->
    ``{a: 1.5, b: 1.5, c: 3}`` when higher is better)."""
    ordered = sorted(values, key=lambda k: -values[k] if higher_is_better else values[k])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and values[ordered[j + 1]] == values[ordered[i]]:
            j += 1
        for k in ordered[i : j + 1]:
            ranks[k] = (i + 1 + j + 1) / 2.0
        i = j + 1
    return ranks


def average_ranks(
    rows: Sequence[dict[str, Any]], metric: str = "psnr", higher_is_better: bool = True
) -> dict[str, dict[str, Any]]:
    """Per sampler: ``{"average_rank", "n_tasks", "of_tasks", "ranks": {task: rank}}``.

    Within each task the samplers with a mean ``metric`` there (status ok) are ranked (:func:`fractional_ranks`);
    a sampler's average is over the tasks where it was ranked (n/a tasks are left out), ``None`` when there are
    none. ``of_tasks`` is the number of tasks in ``rows``.
    """
    cells = cell_means(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    per_sampler: dict[str, dict[str, float]] = {s: {} for s in cells}
    for task in tasks:
        values = {
            s: c[task][metric]
            for s, c in cells.items()
            if task in c and c[task]["status"] == "ok" and c[task].get(metric) is not None
        }
        for s, rank in fractional_ranks(values, higher_is_better).items():
            per_sampler[s][task] = rank
    return {
        s: {
            "average_rank": mean_or_none(list(ranks.values())),
            "n_tasks": len(ranks),
            "of_tasks": len(tasks),
            "ranks": ranks,
        }
        for s, ranks in per_sampler.items()
    }


def winners(rows: Sequence[dict[str, Any]], metric: str = "psnr") -> dict[str, list[str]]:
    """Per task: the sampler(s) with the best mean ``metric`` (several when tied, none when nothing applies)."""
    ranks = average_ranks(rows, metric, higher_is_better=metric != "lpips")
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    out = {}
    for task in tasks:
        ranked = {s: r["ranks"][task] for s, r in ranks.items() if task in r["ranks"]}
        best = min(ranked.values(), default=None)
        out[task] = [s for s, v in ranked.items() if v == best]
    return out


def best_by_rank(ranks: dict[str, dict[str, Any]]) -> list[str]:
    """The sampler(s) with the lowest average rank (ties all named)."""
    scored = {s: r["average_rank"] for s, r in ranks.items() if r["average_rank"] is not None}
    best = min(scored.values(), default=None)
    return [s for s, v in scored.items() if v == best]


def bootstrap_ranks(
    rows: Sequence[dict[str, Any]], metric: str = "psnr", resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Percentile bootstrap over the images (:func:`mgdm_audio.metrics.intervals.bootstrap_percentile`): each
    resample draws the images with replacement, recomputes every (sampler, task) mean ``metric`` on them, the
    ranks within each task as :func:`average_ranks` does (ties share their average rank, n/a cells left out) and
    each sampler's average rank. Per sampler: the 95 % interval of its average rank (``lo``, ``hi``) and
    ``best_share``, the fraction of resamples where it has the lowest average rank (a tie of k shares 1/k)."""
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get(metric) is not None]
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    images = sorted({r["image"] for r in ok})
    if not images:
        return {}
    where = {image: i for i, image in enumerate(images)}
    values = np.full((len(samplers), len(tasks), len(images)), np.nan)
    for r in ok:
        values[samplers.index(r["sampler"]), tasks.index(r["task"]), where[r["image"]]] = r[metric]
    sign = -1.0 if metric == "lpips" else 1.0

    def statistic(idx: np.ndarray) -> np.ndarray:
        means = sign * values[:, :, idx].mean(-1)  # (S, T), NaN where a cell is n/a; higher is better
        better = (means[None, :, :] > means[:, None, :]).sum(1)  # (S, T): how many others beat each
        equal = (means[None, :, :] == means[:, None, :]).sum(1)
        ranks = np.where(np.isnan(means), np.nan, 1.0 + better + 0.5 * (equal - 1))
        counted = (~np.isnan(ranks)).sum(1)
        return np.where(counted > 0, np.nansum(ranks, 1) / np.maximum(counted, 1), np.nan)

    boot = bootstrap_percentile(statistic, len(images), resamples=resamples, seed=seed)
    ranked = np.where(np.isnan(boot.samples), np.inf, boot.samples)
    best = ranked == ranked.min(1, keepdims=True)
    share = (best / best.sum(1, keepdims=True)).mean(0)
    return {
        s: {
            "lo": finite_or_none(boot.lo[i]),
            "hi": finite_or_none(boot.hi[i]),
            "best_share": float(share[i]) if np.isfinite(boot.estimate[i]) else 0.0,
            "images": len(images),
            "resamples": resamples,
            "seed": seed,
        }
        for i, s in enumerate(samplers)
    }


#: per metric: the unit and digits of its paired differences in words and brackets
PAIRED_FORMAT = {"psnr": ("dB", 2), "ssim": ("SSIM", 3)}


def _image_means(by_task: dict[str, dict[Any, float]], tasks: list[str]) -> dict[Any, float]:
    """Each image's mean over ``tasks`` (images present in all of them)."""
    images = [i for i in by_task[tasks[0]] if all(i in by_task[t] for t in tasks)]
    return {i: fmean(by_task[t][i] for t in tasks) for i in images}


def paired_by_image(rows: Sequence[dict[str, Any]], ours: str, metric: str = "psnr") -> dict[str, dict[str, Any]]:
    """``ours`` against every other sampler, paired by image: on the tasks both run, each image's mean ``metric``
    over those tasks, and the Student-t 95 % interval of the mean of ``ours - other`` over the images
    (:func:`~mgdm_audio.metrics.intervals.paired_on_common`; positive: ``ours`` is higher), with the number of images
    on which ``ours`` is higher, the tasks the means are over, and the difference as a bracket and in words."""
    unit, digits = PAIRED_FORMAT[metric]
    values: dict[str, dict[str, dict[Any, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["status"] == "ok" and r.get(metric) is not None:  # a non-finite score (a diverged run) is None
            values[r["sampler"]][r["task"]][r["image"]] = float(r[metric])
    out: dict[str, dict[str, Any]] = {}
    if ours not in values:  # the first sampler ran nowhere (n/a on every task): nothing to pair
        return {}
    for other in list(values):
        tasks = [t for t in values[ours] if t in values[other]] if other != ours else []
        if not tasks:
            continue
        mine, theirs = _image_means(values[ours], tasks), _image_means(values[other], tasks)
        paired = paired_on_common(mine, theirs)
        if paired is None:
            continue
        interval, _ = paired
        if not interval.defined:
            words = f"no interval ({interval.n} image)"
        elif interval.contains_zero:
            words = f"{ours} level with {other}"
        else:
            words = f"{ours} {plain_words(interval, unit, digits)}"
        out[other] = {
            "difference": interval.as_dict(),
            "higher_on": sum(mine[i] > theirs[i] for i in mine if i in theirs),
            "images": interval.n,
            "tasks": tasks,
            "bracket": interval.bracket(digits),
            "words": words,
        }
    return out


def summarise(rows: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Cells per (sampler, task), average PSNR and SSIM ranks with their bootstrap intervals over the images
    (:func:`bootstrap_ranks`, seeded with ``seed``), the best sampler(s) and each task's winner(s)."""
    psnr_ranks = average_ranks(rows, "psnr")
    ssim_ranks = average_ranks(rows, "ssim")
    return {
        "psnr_rank_bootstrap": bootstrap_ranks(rows, "psnr", seed=seed),
        "ssim_rank_bootstrap": bootstrap_ranks(rows, "ssim", seed=seed),
        "cells": cell_means(rows),
        "psnr_rank": psnr_ranks,
        "ssim_rank": ssim_ranks,
        "best_by_psnr_rank": best_by_rank(psnr_ranks),
        "best_by_ssim_rank": best_by_rank(ssim_ranks),
        "task_winners_psnr": winners(rows, "psnr"),
        "task_winners_ssim": winners(rows, "ssim"),
        "paired": _paired(rows),
    }


def _paired(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first sampler of the rows (the first ``--samplers`` entry, n/a rows included) against every other, paired
    by image (PSNR and SSIM); empty without rows."""
    first = next((r["sampler"] for r in rows), None)
    if first is None:
        return {}
    return {"ours": first, "psnr": paired_by_image(rows, first, "psnr"), "ssim": paired_by_image(rows, first, "ssim")}


def payload(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON document ``{"rows", "summary", "settings"}`` (deterministic: no dates or wall-clock totals)."""
    return {"rows": rows, "summary": summarise(rows, int(settings.get("seed", 0))), "settings": settings}


# ============================================================================================ markdown
def _presets_text(settings: dict[str, Any]) -> str:
    presets = {s["label"]: s["sampler_preset"] for s in settings["samplers"]}
    if len(set(presets.values())) == 1:
        return f"sampler preset `{next(iter(presets.values()))}` for all"
    return "sampler presets " + ", ".join(f"{k} `{v}`" for k, v in presets.items())


def _metric_table(
    summary: dict[str, Any], tasks: Sequence[str], samplers: Sequence[str], metric: str, digits: int, ranks: bool
) -> list[str]:
    cells = summary["cells"]
    lower_better = metric == "lpips"
    header = "| sampler | " + " | ".join(tasks) + " |"
    rule = "|---|" + "---|" * len(tasks)
    if ranks:
        header += " avg PSNR rank | avg SSIM rank | tasks ranked |"
        rule += "---|---|---|"
    lines = [header, rule]
    best: dict[str, float | None] = {}
    for task in tasks:
        values = [c[task][metric] for c in cells.values() if task in c and c[task].get(metric) is not None]
        best[task] = (min(values) if lower_better else max(values)) if values else None
    for s in samplers:
        out = []
        for task in tasks:
            cell = cells.get(s, {}).get(task)
            if cell is None or cell["status"] == NA:
                out.append(NA)
                continue
            text = fmt(cell.get(metric), digits)
            out.append(f"**{text}**" if cell.get(metric) is not None and cell[metric] == best[task] else text)
        line = f"| {s} | " + " | ".join(out) + " |"
        if ranks:
            pr, sr = summary["psnr_rank"][s], summary["ssim_rank"][s]
            line += f" {fmt(pr['average_rank'])} | {fmt(sr['average_rank'])} | {pr['n_tasks']} of {pr['of_tasks']} |"
        lines.append(line)
    return lines


def _span(values: Sequence[int]) -> str:
    """``"n"`` when all values are equal, else ``"min–max"``."""
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _cost_lines(summary: dict[str, Any], samplers: Sequence[str]) -> list[str]:
    lines = ["| sampler | preset | NFE per chain | VJP per chain | s/image | tasks run |", "|---|---|---|---|---|---|"]
    for s in samplers:
        ok = [c for c in summary["cells"].get(s, {}).values() if c["status"] == "ok"]
        preset = next(iter(summary["cells"].get(s, {}).values()), {}).get("preset", "")
        if not ok:
            lines.append(f"| {s} | {preset} | {NA} | {NA} | {NA} | 0 |")
            continue
        nfe, vjp = _span([c["nfe"] for c in ok]), _span([c["vjp"] for c in ok])
        seconds = mean_or_none([c["seconds_per_image"] for c in ok])
        lines.append(f"| {s} | {preset} | {nfe} | {vjp} | {fmt(seconds, 3)} | {len(ok)} |")
    return lines


def _bootstrap_lines(summary: dict[str, Any], samplers: Sequence[str]) -> list[str]:
    """The average ranks with their 95 % percentile-bootstrap intervals over the images, and how often each sampler
    has the best average rank among the resamples."""
    psnr, ssim = summary.get("psnr_rank_bootstrap") or {}, summary.get("ssim_rank_bootstrap") or {}
    if not psnr:
        return []
    first = next(iter(psnr.values()))
    images = f"{first['images']} image{'s' * (first['images'] != 1)}"
    lines = [
        "",
        f"Bootstrap over the {images} ({first['resamples']} resamples with replacement, seed {first['seed']}; "
        "every task's means and ranks recomputed on each): the average rank's 95 % percentile "
        "interval and the share of resamples in which the sampler has the best (lowest) average rank.",
        "",
        "| sampler | avg PSNR rank [95 % CI] | best by PSNR rank in | avg SSIM rank [95 % CI] | best by SSIM rank in |",
        "|---|---|---|---|---|",
    ]
    for s in samplers:
        cells = []
        for metric, boot in (("psnr", psnr), ("ssim", ssim)):
            b, r = boot.get(s), summary[f"{metric}_rank"][s]["average_rank"]
            if b is None or r is None:
                cells += [NA, NA]
                continue
            cells += [f"{fmt(r)} [{fmt(b['lo'])}, {fmt(b['hi'])}]", f"{100 * b['best_share']:.0f} %"]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def _paired_lines(paired: dict[str, Any]) -> list[str]:
    """The first sampler minus each other sampler, paired by image, with t intervals and plain words."""
    if not paired.get("psnr"):
        return []
    ours = paired["ours"]
    lines = [
        "",
        f"Paired by image: {ours} minus each sampler. Each image's mean PSNR (SSIM) over the tasks both run, the mean "
        f"difference over the images with its Student-t 95 % interval (positive: {ours} higher); 'level with' an "
        "interval holding 0.",
        "",
        f"| vs | tasks | PSNR difference (dB) [t 95 %] | {ours} higher on | SSIM difference [t 95 %] "
        "| in words (PSNR) |",
        "|---|---|---|---|---|---|",
    ]
    for other, p in paired["psnr"].items():
        ssim = paired["ssim"].get(other, {}).get("bracket", "n/a")
        lines.append(
            f"| {other} | {len(p['tasks'])} | {p['bracket']} | {p['higher_on']} of {p['images']} | {ssim} "
            f"| {p['words']} |"
        )
    return lines


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"**{n}**" for n in names)


def _best_lines(ranks: dict[str, dict[str, Any]], metric: str) -> list[str]:
    """ "Best by average <metric> rank: ..."; when the best runs on fewer tasks than others, also the best among the
    samplers ranked on every task."""
    best = best_by_rank(ranks)
    if not best:
        return []

    def sentence(names: list[str], prefix: str) -> str:
        r = ranks[names[0]]
        tied = " (tied)" if len(names) > 1 else ""
        return f"{prefix}: {_names(names)}{tied}, {r['average_rank']:.2f} over {r['n_tasks']} of {r['of_tasks']} tasks."

    lines = [sentence(best, f"Best by average {metric} rank")]
    if ranks[best[0]]["n_tasks"] < ranks[best[0]]["of_tasks"]:
        everywhere = {s: r for s, r in ranks.items() if r["n_tasks"] == r["of_tasks"]}
        if everywhere:
            lines.append(
                sentence(best_by_rank(everywhere), f"Best by average {metric} rank among the samplers run on all tasks")
            )
    return lines


def markdown_report(document: dict[str, Any], date: str | None = None) -> str:
    """The result tables of :func:`payload`'s document; every sentence is derived from the numbers."""
    settings, summary = document["settings"], document["summary"]
    tasks = list(settings["tasks"])
    samplers = [s["label"] for s in settings["samplers"]]
    date = date or datetime.date.today().isoformat()
    n_tasks, n_images = len(tasks), int(settings["n_images"])
    versions = ", ".join(f"{k} {v}" for k, v in settings["versions"].items())
    dataset = settings.get("dataset", "Fashion-MNIST test")
    lines = [
        f"## Image restoration benchmark: prior `{settings['prior']}`",
        "",
        f"Prior `{settings['prior']}` ({settings['prior_kind']}, weights sha256 `{settings['weights_sha256'][:12]}`, "
        f"images {'x'.join(map(str, settings['image_shape']))}); {n_images} image{'s' * (n_images != 1)} of "
        f"{dataset} (the first {settings['n_images']} of a permutation seeded with {settings['seed']}); "
        f"sigma_y = {settings['sigma_y']}; {_presets_text(settings)}; one posterior sample per image, "
        f"batches of {settings['batch']}; device {settings['device']}; {versions}; {date}.",
        *(
            ["", f"`nonlinear_blur` operator: {settings['nonlinear_blur']}."]
            if "nonlinear_blur" in tasks and "nonlinear_blur" in settings
            else []
        ),
        "",
        "Mean PSNR (dB, higher is better) over the images, best per task in bold; n/a: the sampler cannot run "
        "this operator (its reason is in the JSON rows). Average ranks: within each task the samplers that run are "
        "ranked by mean PSNR (and by mean SSIM), 1 = best, ties share the average rank; the average is the rank "
        f"over applicable tasks, k of {n_tasks} (n/a tasks are left out, not counted as last).",
        "",
        *_metric_table(summary, tasks, samplers, "psnr", 2, ranks=True),
        "",
        "Mean SSIM (higher is better), best per task in bold.",
        "",
        *_metric_table(summary, tasks, samplers, "ssim", 3, ranks=False),
        "",
    ]
    if any("lpips" in c for by_task in summary["cells"].values() for c in by_task.values()):
        lines += [
            "Mean LPIPS (AlexNet, lower is better; – where the images are too small for AlexNet).",
            "",
            *_metric_table(summary, tasks, samplers, "lpips", 3, ranks=False),
            "",
        ]
    lines += [
        "Cost: network evaluations (NFE) and vector-Jacobian products (VJP) per chain (min–max over tasks), sampler "
        "wall seconds per image (batch seconds / batch size, mean over the tasks run).",
        "",
        *_cost_lines(summary, samplers),
        "",
    ]
    for metric in ("psnr", "ssim"):
        lines += _best_lines(summary[f"{metric}_rank"], metric.upper())
    lines += _bootstrap_lines(summary, samplers)
    lines += _paired_lines(summary.get("paired") or {})
    parts = []
    for task in tasks:
        names = summary["task_winners_psnr"].get(task, [])
        if not names:
            parts.append(f"{task}: no sampler applies")
            continue
        value = summary["cells"][names[0]][task]["psnr"]
        parts.append(f"{task}: {', '.join(names)} ({fmt(value)} dB)")
    lines += ["", "Winner per task by mean PSNR: " + "; ".join(parts) + ".", ""]
    return "\n".join(lines)


# ============================================================================================ plot
def measurement_visual(op: Operator, y: Tensor, image_shape: Sequence[int]) -> Tensor:
    """A ``(C, H, W)`` picture of one measurement ``y`` (batch of 1) in ``[-1, 1]``: image-shaped measurements as
    they are, smaller ones (super-resolution) enlarged by pixel repetition, larger ones (phase retrieval: Fourier
    magnitudes) as ``log(1 + |y|)`` resampled and stretched to ``[-1, 1]``, flat selections through the adjoint
    (missing pixels at 0, mid grey)."""
    c, h, w = (int(s) for s in image_shape)
    y = y.detach().float().cpu()
    if y.ndim == 4 and y.shape[1] == c:
        if tuple(y.shape[-2:]) == (h, w):
            return y[0].clamp(-1.0, 1.0)
        if y.shape[-2] < h:
            return F.interpolate(y, size=(h, w), mode="nearest")[0].clamp(-1.0, 1.0)
        mag = F.interpolate(torch.log1p(y), size=(h, w), mode="area")[0]
        return 2.0 * (mag - mag.min()) / (mag.max() - mag.min()).clamp_min(1e-12) - 1.0
    if isinstance(op, LinearOperator):
        device = next(iter(op.buffers()), torch.empty(0)).device
        with torch.no_grad():
            back = op.adjoint(y.to(device)).cpu()
        return back.reshape(-1, c, h, w)[0].clamp(-1.0, 1.0)
    return torch.zeros(c, h, w)


def plot_examples(setup: BenchmarkSetup, result: BenchmarkResult, path: Path) -> None:
    """A PNG grid: one row per task, columns clean, measurement and each sampler's restoration of the first image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["clean", "measurement", *(r.name for r in setup.runs)]
    n_rows = len(setup.tasks)
    fig, axes = plt.subplots(n_rows, len(columns), figsize=(1.2 * len(columns), 1.25 * n_rows), squeeze=False)

    def show(ax: Any, image: Tensor | None) -> None:
        ax.set_xticks([])
        ax.set_yticks([])
        if image is None:
            ax.text(0.5, 0.5, NA, ha="center", va="center", fontsize=8, transform=ax.transAxes)
            return
        pic = ((image.float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
        pic = pic[0] if pic.shape[0] == 1 else pic.permute(1, 2, 0)
        ax.imshow(pic.numpy(), cmap="gray", vmin=0.0, vmax=1.0)

    clean = setup.clean[0].detach().cpu()
    for i, task in enumerate(setup.tasks):
        op = setup.operators[task]
        pictures = [clean, measurement_visual(op, result.measurements[task], setup.prior.image_shape)]
        pictures += [result.examples.get((task, r.name)) for r in setup.runs]
        for j, picture in enumerate(pictures):
            show(axes[i][j], picture)
        axes[i][0].set_ylabel(task, fontsize=6)
    for j, name in enumerate(columns):
        axes[0][j].set_title(name, fontsize=6)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=120)


# ============================================================================================ command line
PLOT = "grid of the first image per task: clean, measurement, samplers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``mgdm-audio benchmark image`` flags."""
    parser.add_argument("--prior", default="fashion-mnist-pixel", help="shipped image prior name or export folder")
    parser.add_argument("--tasks", default="all", metavar="all|T1,T2", help="image tasks (default: all ten)")
    parser.add_argument(
        "--samplers",
        default=",".join(SAMPLERS),
        metavar="[NAME=]S[:PRESET[:k=v]],...",
        help="registry samplers, each optionally with its own preset and overrides (e.g. dps:paper)",
    )
    parser.add_argument(
        "--preset", default="fast", help="fast | default | paper (or a sampler preset) for all samplers"
    )
    parser.add_argument("--n-images", type=int, default=8, help="first N images of the seeded test permutation")
    parser.add_argument("--seed", type=int, default=0, help="image order, measurement noise and sampler seeds")
    parser.add_argument("--batch", type=int, default=None, help="images per sampler batch (default: all N at once)")
    parser.add_argument("--data-root", metavar="DIR", help="folder with the Fashion-MNIST IDX files (t10k-*)")
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "validation"],
        help="test: the held-out t10k images (reported results); validation: train images 55000..59999 (tuning)",
    )
    parser.add_argument("-d", "--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--kernel-wizard", metavar="WEIGHTS", help=KERNEL_WIZARD_HELP)


def run(args: argparse.Namespace) -> Report:
    """``mgdm-audio benchmark image``: every check before any work, then every run on every task."""
    names = ("tasks", "samplers", "preset", "n_images", "seed", "batch", "device", "split", "kernel_wizard")
    setup = prepare(args.prior, data_root=args.data_root or DEFAULT_ROOT, **{n: getattr(args, n) for n in names})
    result = run_benchmark(setup, cache=cache_file(args.cache), progress=not args.no_progress)
    document = payload(result.rows, setup.settings)
    return Report(
        document,
        markdown_report(document),
        lambda path: plot_examples(setup, result, path),
        weights_sha256=setup.settings["weights_sha256"] or None,
        device=str(setup.device),
    )


__all__ = [
    "SAMPLERS",
    "BenchmarkResult",
    "BenchmarkSetup",
    "RunSpec",
    "average_ranks",
    "best_by_rank",
    "cell_means",
    "derive_seed",
    "fit_to_shape",
    "fractional_ranks",
    "load_test_images",
    "markdown_report",
    "measurement_visual",
    "parse_samplers",
    "parse_tasks",
    "payload",
    "plot_examples",
    "prepare",
    "run_benchmark",
    "summarise",
    "winners",
]
