r"""The exact-posterior benchmark: every sampler against the closed-form posterior of a linear
problem under the 25-component Gaussian-mixture prior (the MCGdiff protocol, as the MGDM reference code builds it in
``src/utils/gmm_utils.py`` of the public repository Badr-MOUFAD/mgdm).

For each setting ``(d, d_y)`` and problem ``i`` (seeded), draw the mixture weights, a random
``A = U diag(s) V[:d_y]`` and ``sigma_y = U(0,1) max(s)``, ``x* ~ prior``, ``y = A x* + sigma_y eps``.
Each sampler draws ``n`` posterior samples (``n`` chains in one batch, float32) with the exact
denoiser; the score is the sliced Wasserstein distance to ``n`` exact posterior samples, and the
noise floor is the same distance between two independent exact sample sets of size ``n``. All
samplers of a problem are scored along the same random directions.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mgdm_audio.core.atomic import save_figure_atomic
from mgdm_audio.core.gmm import GaussianMixture, random_measurement
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.metrics.sliced_wasserstein import sliced_wasserstein
from mgdm_audio.samplers.base import SamplerResult
from mgdm_audio.samplers.registry import get_sampler

TEST_SEED_BASE = 0
VALIDATION_SEED_BASE = 500_000


@dataclass(frozen=True)
class SamplerEntry:
    """A sampler run in the suite: registry name, preset, overrides and a display label."""

    sampler: str
    preset: str = "default"
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or (self.sampler if self.preset == "default" else f"{self.sampler}:{self.preset}")


@dataclass(frozen=True)
class Suite:
    dims: tuple[int, ...]
    dims_y: tuple[int, ...]
    n_problems: int
    n_samples: int
    n_directions: int = 100
    seed_base: int = TEST_SEED_BASE


QUICK = Suite(dims=(8, 80), dims_y=(1, 2), n_problems=5, n_samples=1000)
FULL = Suite(dims=(8, 80, 800), dims_y=(1, 2, 4), n_problems=20, n_samples=2000)


@dataclass
class Problem:
    dim: int
    dim_y: int
    index: int
    seed: int
    mixture: GaussianMixture
    matrix: torch.Tensor
    sigma_y: float
    y: torch.Tensor
    reference: torch.Tensor
    floor: float
    directions_seed: int

    def inverse_problem(self) -> InverseProblem:
        return InverseProblem(MatrixOperator(self.matrix.float()), self.y.float()[None], self.sigma_y)


def problem_seed(base: int, dim: int, dim_y: int, index: int) -> int:
    return base + 10_007 * dim + 101 * dim_y + index


def make_problem(dim: int, dim_y: int, index: int, n_samples: int, n_directions: int, seed_base: int) -> Problem:
    seed = problem_seed(seed_base, dim, dim_y, index)
    g = make_generator(seed)
    mixture = GaussianMixture.grid25(dim, g)
    matrix, sigma_y = random_measurement(dim, dim_y, g)
    x_star = mixture.sample(1, g)[0]
    y = matrix @ x_star + sigma_y * torch.randn(dim_y, generator=g, dtype=torch.float64)
    posterior = mixture.posterior(matrix, y, sigma_y)
    reference = posterior.sample(n_samples, g)
    second = posterior.sample(n_samples, g)
    floor = sliced_wasserstein(reference, second, n_directions, make_generator(seed + 1))
    return Problem(dim, dim_y, index, seed, mixture, matrix, sigma_y, y, reference, floor, seed + 1)


def sample_entry(entry: SamplerEntry, problem: Problem, n_samples: int) -> SamplerResult:
    """One sampler's ``n_samples`` posterior samples on one problem, with the benchmark's seeding."""
    spec = get_sampler(entry.sampler)
    config = spec.config(entry.preset, **entry.overrides)
    inverse = None if not spec.needs_problem else problem.inverse_problem()
    g = make_generator(problem.seed * 31 + 7)
    x_init = torch.randn(n_samples, problem.dim, generator=g)
    return spec.run(problem.mixture.denoiser(), inverse, x_init, generator=g, config=config)


def run_entry(entry: SamplerEntry, problem: Problem, n_samples: int, n_directions: int) -> dict[str, Any]:
    """One sampler on one problem: its row of the results table."""
    result = sample_entry(entry, problem, n_samples)
    finite = bool(torch.all(torch.isfinite(result.samples)))
    sw = (
        sliced_wasserstein(result.samples, problem.reference, n_directions, make_generator(problem.directions_seed))
        if finite
        else math.inf
    )
    return {
        "sampler": entry.name,
        "d": problem.dim,
        "d_y": problem.dim_y,
        "problem": problem.index,
        "sw": sw,
        "sw_floor": problem.floor,
        "nfe": result.nfe,
        "vjp": result.vjp,
        "seconds": round(result.seconds, 4),
    }


def _run_problem(task: tuple[int, int, int, Suite, list[SamplerEntry]]) -> list[dict[str, Any]]:
    """Worker: every pending entry on one problem (one thread per worker process)."""
    d, dy, i, suite, entries = task
    torch.set_num_threads(1)
    problem = make_problem(d, dy, i, suite.n_samples, suite.n_directions, suite.seed_base)
    return [run_entry(entry, problem, suite.n_samples, suite.n_directions) for entry in entries]


def run_suite(
    entries: Sequence[SamplerEntry],
    suite: Suite,
    cache: Path | None = None,
    progress: bool = True,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Every entry on every problem of the suite, problems spread over ``workers`` processes.

    Rows already in ``cache`` (JSON lines) are reused and new rows are appended as each problem
    finishes, so a killed run continues where it stopped. Results do not depend on ``workers``.
    """
    done: dict[tuple, dict[str, Any]] = {}
    if cache is not None and cache.exists():
        for line in cache.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                # cache lines carry the suite's seed base (lines written before it was recorded are taken as they are)
                if row.pop("seed_base", suite.seed_base) == suite.seed_base:
                    done[(row["sampler"], row["d"], row["d_y"], row["problem"])] = row
    settings = [(d, dy, i) for d in suite.dims for dy in suite.dims_y for i in range(suite.n_problems)]
    tasks = []
    for d, dy, i in settings:
        pending = [e for e in entries if (e.name, d, dy, i) not in done]
        if pending:
            tasks.append((d, dy, i, suite, pending))
    bar = tqdm(total=len(settings) * len(entries), desc="gmm benchmark", unit="run", disable=not progress)
    bar.update(len(settings) * len(entries) - sum(len(t[4]) for t in tasks))

    def record(new_rows: list[dict[str, Any]]) -> None:
        for row in new_rows:
            done[(row["sampler"], row["d"], row["d_y"], row["problem"])] = row
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with cache.open("a") as f:
                f.writelines(json.dumps({**row, "seed_base": suite.seed_base}) + "\n" for row in new_rows)
        bar.set_postfix_str(f"d={new_rows[0]['d']} d_y={new_rows[0]['d_y']} #{new_rows[0]['problem']}")
        bar.update(len(new_rows))

    if workers > 1 and len(tasks) > 1:
        tasks.sort(key=lambda t: -t[0] * len(t[4]))  # largest problems first: less idle time at the end
        with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
            for new_rows in pool.imap_unordered(_run_problem, tasks):
                record(new_rows)
    else:
        for task in tasks:
            record(_run_problem(task))
    bar.close()
    return [done[(e.name, d, dy, i)] for d, dy, i in settings for e in entries]


def mean_ci(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 1.96 standard errors."""
    v = torch.tensor(list(values), dtype=torch.float64)
    if v.numel() < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(1.96 * v.std(unbiased=True) / math.sqrt(v.numel()))


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per sampler and setting: mean SW ± 1.96 SE, floor, mean NFE/VJP/seconds; and the suite average."""
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["sampler"], row["d"], row["d_y"])].append(row)
    per_setting = {}
    for (name, d, dy), rs in groups.items():
        m, ci = mean_ci(r["sw"] for r in rs)
        fm, fci = mean_ci(r["sw_floor"] for r in rs)
        per_setting[f"{name}|{d}|{dy}"] = {
            "sampler": name,
            "d": d,
            "d_y": dy,
            "sw_mean": m,
            "sw_ci": ci,
            "floor_mean": fm,
            "floor_ci": fci,
            "ratio_to_floor": m / fm,
            "nfe": sum(r["nfe"] for r in rs) / len(rs),
            "vjp": sum(r["vjp"] for r in rs) / len(rs),
            "seconds": sum(r["seconds"] for r in rs) / len(rs),
            "n": len(rs),
        }
    averages = defaultdict(list)
    for s in per_setting.values():
        averages[s["sampler"]].append(s["sw_mean"])
    return {"per_setting": per_setting, "suite_average": {k: sum(v) / len(v) for k, v in averages.items()}}


def markdown_table(rows: Sequence[dict[str, Any]], title: str, note: str = "") -> str:
    """Mean SW ± 1.96 SE per sampler (rows) and setting (columns), the floor, and cost."""
    summary = summarise(rows)["per_setting"]
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    settings = sorted({(r["d"], r["d_y"]) for r in rows})
    head = "| sampler | " + " | ".join(f"d={d}, d_y={dy}" for d, dy in settings) + " | average | NFE | VJP | s/run |"
    lines = [f"### {title}", "", *([note, ""] if note else []), head, "|" + "---|" * (len(settings) + 5)]
    for name in samplers:
        cells, means = [], []
        for d, dy in settings:
            s = summary.get(f"{name}|{d}|{dy}")
            cells.append("–" if s is None else f"{s['sw_mean']:.3f} ± {s['sw_ci']:.3f}")
            if s is not None:
                means.append(s["sw_mean"])
        ss = [v for k, v in summary.items() if v["sampler"] == name]
        cost = (
            f"{sum(s['nfe'] for s in ss) / len(ss):.0f} | {sum(s['vjp'] for s in ss) / len(ss):.0f} | "
            f"{sum(s['seconds'] for s in ss) / len(ss):.2f}"
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(means) / len(means):.3f} | {cost} |")
    floor_cells, floor_means = [], []
    for d, dy in settings:
        s = next(v for v in summary.values() if v["d"] == d and v["d_y"] == dy)
        floor_cells.append(f"{s['floor_mean']:.3f} ± {s['floor_ci']:.3f}")
        floor_means.append(s["floor_mean"])
    lines.append(
        "| *floor (exact vs exact)* | "
        + " | ".join(floor_cells)
        + f" | {sum(floor_means) / len(floor_means):.3f} | | | |"
    )
    return "\n".join(lines) + "\n"


def wins(rows: Sequence[dict[str, Any]], ours: str, other: str) -> tuple[int, int]:
    """In how many settings ``ours`` has the lower mean SW than ``other`` (and out of how many)."""
    summary = summarise(rows)["per_setting"]
    settings = sorted({(r["d"], r["d_y"]) for r in rows})
    won = total = 0
    for d, dy in settings:
        a, b = summary.get(f"{ours}|{d}|{dy}"), summary.get(f"{other}|{d}|{dy}")
        if a and b:
            total += 1
            won += a["sw_mean"] < b["sw_mean"]
    return won, total


def suite_to_dict(suite: Suite) -> dict[str, Any]:
    return asdict(suite)


def elapsed(start: float) -> float:
    return time.perf_counter() - start


# The committed comparison: every sampler at its reference (image) hyperparameters, MGDM at the
# preset chosen on validation problems (evaluation/gmm/rounds/README.md), and unconditional DDIM as the
# prior-only reference point.
DEFAULT_ENTRIES: tuple[SamplerEntry, ...] = (
    SamplerEntry("mgdm", "gmm"),
    SamplerEntry("mgdm", "paper-image"),
    SamplerEntry("dps"),
    SamplerEntry("pigdm"),
    SamplerEntry("diffpir"),
    SamplerEntry("ddrm"),
    SamplerEntry("reddiff"),
    SamplerEntry("daps"),
    SamplerEntry("vml_map"),
    SamplerEntry("ddim", label="ddim (prior only)"),
)

SCALING_REPS: tuple[int, ...] = (1, 2, 4, 8)
SCALING_PRESET = "gmm"


def scaling_label(reps: int) -> str:
    return f"mgdm:{SCALING_PRESET} R={reps}"


def scaling_entries(skip: int | None = None) -> tuple[SamplerEntry, ...]:
    """MGDM with R Gibbs sweeps per reverse step, everything else at the ``gmm`` preset (``skip``: the R
    the main table already runs, reused instead of recomputed)."""
    return tuple(
        SamplerEntry("mgdm", SCALING_PRESET, {"n_reps": r}, label=scaling_label(r)) for r in SCALING_REPS if r != skip
    )


def run_benchmark(
    suite: Suite,
    samplers: Sequence[str] | None = None,
    scaling: bool = True,
    cache: Path | None = None,
    workers: int = 1,
    progress: bool = True,
    label: str = "",
) -> tuple[dict[str, Any], str]:
    """The committed comparison (and the Gibbs-sweep scaling run): JSON payload and Markdown report.

    Every sampler name and preset is validated before any work starts.
    """
    entries = [e for e in DEFAULT_ENTRIES if samplers is None or e.sampler in samplers]
    main_reps = get_sampler("mgdm").config(SCALING_PRESET).n_reps
    main_mgdm = next((e for e in entries if e.sampler == "mgdm" and e.preset == SCALING_PRESET), None)
    extra = list(scaling_entries(skip=main_reps if main_mgdm else None)) if scaling else []
    for e in entries + extra:
        get_sampler(e.sampler).config(e.preset, **e.overrides)
    rows = run_suite(entries + extra, suite, cache=cache, progress=progress, workers=workers)
    scaling_names = {scaling_label(r) for r in SCALING_REPS}
    main_rows = [r for r in rows if r["sampler"] not in scaling_names]
    scaling_rows = [r for r in rows if r["sampler"] in scaling_names]
    if scaling and main_mgdm is not None:
        scaling_rows += [
            {**r, "sampler": scaling_label(main_reps)} for r in main_rows if r["sampler"] == main_mgdm.name
        ]
        order = {scaling_label(r): i for i, r in enumerate(SCALING_REPS)}
        scaling_rows.sort(key=lambda r: (order[r["sampler"]], r["d"], r["d_y"], r["problem"]))
    parts = [
        f"## GMM exact-posterior benchmark ({label or 'custom'} suite)\n",
        f"Suite: {json.dumps(suite_to_dict(suite))}. Sliced Wasserstein (100 directions) to exact posterior "
        "samples, mean ± 1.96 SE over problems; lower is better; the floor is the SW between two exact sample "
        "sets of the same size. NFE and VJP are per run (all chains in one batch; a call on k batches of chains "
        "at once, as MGDM's x0 candidates make, counts k); seconds are per run on one "
        "CPU thread.\n",
        markdown_table(main_rows, "Samplers", ""),
    ]
    if main_mgdm is not None:
        for other in ("dps", "diffpir"):
            won, total = wins(main_rows, main_mgdm.name, other)
            if total:
                parts.append(f"- {main_mgdm.name} has a lower mean SW than {other} in {won} of {total} settings.")
        parts.append("")
    if scaling_rows:
        parts.append(markdown_table(scaling_rows, f"Compute scaling: MGDM ({SCALING_PRESET}) with R Gibbs sweeps", ""))
    payload = {
        "suite": suite_to_dict(suite),
        "rows": main_rows,
        "scaling_rows": scaling_rows,
        "summary": summarise(rows),
    }
    return payload, "\n".join(parts)


def plot_scaling(payload: dict[str, Any], path: Path) -> None:
    """SW against NFE per setting: MGDM's R sweeps as a line, the other samplers as points (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summarise(payload["rows"] + payload["scaling_rows"])["per_setting"]
    settings = sorted({(v["d"], v["d_y"]) for v in per.values()})
    fig, axes = plt.subplots(1, len(settings), figsize=(4 * len(settings), 3.6), squeeze=False)
    scaling_names = [scaling_label(r) for r in SCALING_REPS]
    for ax, (d, dy) in zip(axes[0], settings, strict=True):
        pts = [per[f"{n}|{d}|{dy}"] for n in scaling_names if f"{n}|{d}|{dy}" in per]
        if pts:
            ax.errorbar(
                [p["nfe"] for p in pts],
                [p["sw_mean"] for p in pts],
                yerr=[p["sw_ci"] for p in pts],
                marker="o",
                capsize=3,
                label="MGDM, R = " + ",".join(str(r) for r in SCALING_REPS),
            )
        for v in per.values():
            if (
                (v["d"], v["d_y"]) == (d, dy)
                and v["sampler"] not in scaling_names
                and not v["sampler"].startswith("mgdm")
            ):
                ax.scatter(v["nfe"], v["sw_mean"], marker="s", s=18)
                ax.annotate(
                    v["sampler"], (v["nfe"], v["sw_mean"]), fontsize=7, xytext=(3, 2), textcoords="offset points"
                )
        floor = next(v["floor_mean"] for v in per.values() if (v["d"], v["d_y"]) == (d, dy))
        ax.axhline(floor, color="gray", ls="--", lw=1, label="floor")
        ax.set_xscale("log")
        ax.set_title(f"d = {d}, d_y = {dy}")
        ax.set_xlabel("NFE per run")
        ax.set_ylabel("sliced Wasserstein to the exact posterior")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
