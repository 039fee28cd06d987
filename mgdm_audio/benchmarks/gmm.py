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

import argparse
import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mgdm_audio.benchmarks.equal_compute import (
    FACTORS,
    MATCH_RULES,
    MGDM_SWEEPS,
    Budget,
    budgets,
    equal_compute_table,
    matched_section,
    plot_equal_compute,
)
from mgdm_audio.benchmarks.harness import Report, cache_file, run_cells
from mgdm_audio.core.atomic import save_figure_atomic
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture, gmm_noise_levels, random_measurement
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import MatrixOperator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.metrics.intervals import Interval, paired_on_common, t_interval
from mgdm_audio.metrics.sliced_wasserstein import sliced_wasserstein
from mgdm_audio.samplers.base import SamplerResult
from mgdm_audio.samplers.registry import get_sampler
from mgdm_audio.samplers.run import RunSpec, check_unique, parse_run_spec, resolve, run_posterior

TEST_SEED_BASE = 0
VALIDATION_SEED_BASE = 500_000
ENGINE_VERSION = 1
"""Part of every cache key: raise it when a change to this file changes the numbers of an unchanged cell."""


def entry(sampler: str, preset: str = "default", overrides: dict[str, Any] | None = None, label: str = "") -> RunSpec:
    """A sampler run of the suite; its label defaults to ``sampler`` or ``sampler:preset``."""
    name = label or (sampler if preset == "default" else f"{sampler}:{preset}")
    return RunSpec(sampler, preset, tuple(sorted((overrides or {}).items())), name)


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


def sample_entry(run: RunSpec, problem: Problem, n_samples: int) -> SamplerResult:
    """One sampler's ``n_samples`` posterior samples on one problem, with the benchmark's seeding."""
    posterior = resolve(run)
    inverse = None if not posterior.sampler.needs_problem else problem.inverse_problem()
    seed = problem.seed * 31 + 7
    return run_posterior(problem.mixture.denoiser(), inverse, posterior, n_samples, seed, x_shape=(problem.dim,))


def score_entry(run: RunSpec, problem: Problem, n_samples: int, n_directions: int) -> dict[str, Any]:
    """One sampler on one problem: its row of the results table (without the label)."""
    result = sample_entry(run, problem, n_samples)
    finite = bool(torch.all(torch.isfinite(result.samples)))
    sw = (
        sliced_wasserstein(result.samples, problem.reference, n_directions, make_generator(problem.directions_seed))
        if finite
        else math.inf
    )
    return {
        "d": problem.dim,
        "d_y": problem.dim_y,
        "problem": problem.index,
        "sw": sw,
        "sw_floor": problem.floor,
        "nfe": result.nfe,
        "vjp": result.vjp,
        "seconds": round(result.seconds, 4),
    }


@dataclass(frozen=True)
class GmmCell:
    """One sampler run on one problem of the suite (the harness's cell; the problem is the group)."""

    run: RunSpec
    suite: Suite
    dim: int
    dim_y: int
    index: int

    @property
    def group(self) -> tuple[int, int, int]:
        return (self.dim, self.dim_y, self.index)

    @property
    def key(self) -> dict[str, Any]:
        return {
            "engine": "gmm",
            "version": ENGINE_VERSION,
            **resolve(self.run).key(),
            "problem": [self.dim, self.dim_y, self.index],
            "seed_base": self.suite.seed_base,
            "n_samples": self.suite.n_samples,
            "n_directions": self.suite.n_directions,
        }


def compute_problem(cells: list[GmmCell]) -> list[list[dict[str, Any]]]:
    """The harness's compute: make the cells' shared problem once, then one row per sampler run."""
    c = cells[0]
    problem = make_problem(c.dim, c.dim_y, c.index, c.suite.n_samples, c.suite.n_directions, c.suite.seed_base)
    return [[score_entry(cell.run, problem, c.suite.n_samples, c.suite.n_directions)] for cell in cells]


def run_suite(
    entries: Sequence[RunSpec],
    suite: Suite,
    cache: Path | None = None,
    progress: bool = True,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Every entry on every problem of the suite (problem-major order), problems spread over ``workers``
    processes; rows in the cache (keyed by the resolved config, problem and suite) are reused, new ones appended
    as each problem finishes, so a killed run continues where it stopped. Results do not depend on ``workers``."""
    settings = [(d, dy, i) for d in suite.dims for dy in suite.dims_y for i in range(suite.n_problems)]
    cells = [GmmCell(e, suite, d, dy, i) for d, dy, i in settings for e in entries]
    rows = run_cells(
        cells,
        compute_problem,
        cache,
        workers=workers,
        cost=lambda group: group[0].dim * len(group),  # largest problems first: less idle time at the end
        progress=progress,
        desc="gmm benchmark",
        status=lambda cell: f"d={cell.dim} d_y={cell.dim_y} #{cell.index}",
    )
    assert rows is not None  # not sharded
    return [{"sampler": cell.run.name, **r[0]} for cell, r in zip(cells, rows, strict=True)]


def mean_ci(values: Iterable[float]) -> tuple[float, float]:
    """Mean and the half-width of its Student-t 95 % interval, ``t_{0.975, n-1} s / sqrt(n)`` (NaN for one value;
    :func:`mgdm_audio.metrics.intervals.t_interval`)."""
    ci = t_interval(list(values))
    return ci.mean, (ci.hi - ci.mean) if ci.defined else math.nan


def paired_by_problem(
    rows: Sequence[dict[str, Any]], ours: str, other: str, setting: tuple[int, int] | None = None
) -> tuple[Interval, int] | None:
    """SW of ``ours`` minus SW of ``other`` on the problems both ran (one setting, or all when ``setting`` is
    None): the Student-t 95 % interval of the mean difference and on how many problems ``ours`` is lower."""
    sw: dict[str, dict[tuple[int, int, int], float]] = {ours: {}, other: {}}
    for r in rows:
        if r["sampler"] in sw and (setting is None or (r["d"], r["d_y"]) == setting):
            sw[r["sampler"]][(r["d"], r["d_y"], r["problem"])] = r["sw"]
    return paired_on_common(dict(sorted(sw[ours].items())), sw[other])


def paired_table(rows: Sequence[dict[str, Any]], ours: str) -> tuple[str, list[dict[str, Any]]]:
    """``ours`` against every other sampler, paired by problem: per setting and over all problems, the mean SW
    difference with its t 95 % interval (negative: ``ours`` is closer to the posterior) and how often it is
    lower. Markdown and JSON rows."""
    samplers = [s for s in dict.fromkeys(r["sampler"] for r in rows) if s != ours]
    settings = sorted({(r["d"], r["d_y"]) for r in rows})
    head = "| vs | " + " | ".join(f"d={d}, d_y={dy}" for d, dy in settings) + " | all problems | lower on |"
    lines = [
        f"### Paired by problem: {ours} minus each sampler",
        "",
        f"Mean SW difference over the problems both ran, with its Student-t 95 % interval (negative: {ours} is "
        "closer to the exact posterior; an interval holding 0: the problems cannot tell the two apart), and on how "
        f"many problems {ours} has the lower SW. The all-problems column pools settings whose SW scales differ.",
        "",
        head,
        "|" + "---|" * (len(settings) + 3),
    ]
    out = []
    for other in samplers:
        cells = []
        for setting in settings:
            found = paired_by_problem(rows, ours, other, setting)
            cells.append("–" if found is None else found[0].bracket(3))
        found = paired_by_problem(rows, ours, other)
        if found is None:
            continue
        diff, lower = found
        lines.append(f"| {other} | " + " | ".join(cells) + f" | {diff.bracket(3)} | {lower} of {diff.n} |")
        out.append({"a": ours, "b": other, "difference": diff.as_dict(), "a_lower": lower})
    return "\n".join(lines) + "\n", out


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per sampler and setting: mean SW ± its t 95 % half-width, floor, mean NFE/VJP/seconds; and the suite
    average."""
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
    """Mean SW ± t 95 % half-width per sampler (rows) and setting (columns), the floor, and cost."""
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


# The committed comparison: every sampler at its reference (image) hyperparameters, MGDM at the
# preset chosen on validation problems (evaluation/gmm/rounds/README.md), and unconditional DDIM as the
# prior-only reference point.
DEFAULT_ENTRIES: tuple[RunSpec, ...] = (
    entry("mgdm", "gmm"),
    entry("mgdm", "paper-image"),
    entry("dps"),
    entry("pigdm"),
    entry("diffpir"),
    entry("ddrm"),
    entry("reddiff"),
    entry("daps"),
    entry("pnpdm"),
    entry("vml_map"),
    entry("ddim", label="ddim (prior only)"),
)

SCALING_REPS: tuple[int, ...] = (1, 2, 4, 8)
SCALING_PRESET = "gmm"


def scaling_label(reps: int) -> str:
    return f"mgdm:{SCALING_PRESET} R={reps}"


def scaling_entries(skip: int | None = None) -> tuple[RunSpec, ...]:
    """MGDM with R Gibbs sweeps per reverse step, everything else at the ``gmm`` preset (``skip``: the R
    the main table already runs, reused instead of recomputed)."""
    return tuple(
        entry("mgdm", SCALING_PRESET, {"n_reps": r}, label=scaling_label(r)) for r in SCALING_REPS if r != skip
    )


def select_entries(samplers: Sequence[str] | None) -> list[RunSpec]:
    """``--samplers``: registry names pick rows of the committed comparison; full run specs
    (``[NAME=]sampler:preset[:key=value...]``) add runs of their own."""
    if samplers is None:
        return list(DEFAULT_ENTRIES)
    names = [s for s in samplers if ":" not in s and "=" not in s]
    for name in names:
        get_sampler(name)  # one clear error for an unknown name, before any work
    custom = [parse_run_spec(s) for s in samplers if ":" in s or "=" in s]
    return [e for e in DEFAULT_ENTRIES if e.sampler in names] + custom


def run_key(run: RunSpec) -> str:
    """What a run computes (its resolved config and start), as canonical JSON: equal keys give equal rows."""
    return json.dumps(resolve(run).key(), sort_keys=True)


def equal_compute_plan(entries: Sequence[RunSpec], known: Sequence[RunSpec]) -> tuple[list[Budget], dict[str, str]]:
    """The budgets of every entry that samples a posterior (:func:`mgdm_audio.benchmarks.equal_compute.budgets`)
    and, per budget run, the label of the run that computes it: a run of ``known`` (or an earlier budget) with the
    same resolved config, else the budget run itself."""
    grid = gmm_noise_levels().T
    plan = [b for e in entries if resolve(e).sampler.needs_problem for b in budgets(e, grid)]
    owner = {run_key(e): e.name for e in known}
    source = {}
    for b in plan:
        source[b.run.name] = owner.setdefault(run_key(b.run), b.run.name)
    return plan, source


def setting_name(row: dict[str, Any]) -> str:
    return f"d={row['d']}, d_y={row['d_y']}"


def equal_compute_rows(plan: Sequence[Budget], source: dict[str, str], rows: Sequence[dict[str, Any]]) -> list[dict]:
    """Every budget's rows (from the run that computed it), labelled by the run it scales and the budget."""
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_label[r["sampler"]].append(r)
    out = []
    for b in plan:
        meta = {"sampler": b.base, "budget": b.value, "budget_label": b.label, "knob": b.knob, "factor": b.factor}
        out += [{**r, **meta} for r in by_label[source[b.run.name]]]
    return out


EQUAL_COMPUTE_NOTE = (
    "Each sampler at budgets of its cost knob: MGDM's Gibbs sweeps R = {sweeps}, the others' steps (or annealing "
    "levels, split-Gibbs iterations) at x{factors} of their preset's value (x0.125 .. x1 where twice the preset "
    "would pass the prior's {grid}-step grid); DDIM (prior only) is left out. Mean SW with its Student-t 95 % "
    "interval over problems, per setting and over all problems; NFE, VJP and seconds per run are means over all "
    "problems. Seconds are wall time of one run on one CPU thread in this run's worker processes; rows read from a "
    "--cache keep the seconds of the run that computed them, so compare seconds from one run on one machine (a "
    "fresh cache)."
)


def run_benchmark(
    suite: Suite,
    samplers: Sequence[str] | None = None,
    scaling: bool = True,
    cache: Path | None = None,
    workers: int = 1,
    progress: bool = True,
    label: str = "",
    equal_compute: bool = False,
    match_at: str = "closest",
) -> tuple[dict[str, Any], str]:
    """The committed comparison (and the Gibbs-sweep scaling run; with ``equal_compute``, every sampler at 3-4
    budgets and the comparison at matched seconds, the target chosen by ``match_at``): JSON payload and Markdown report.

    Every sampler name and preset is validated before any work starts.
    """
    entries = select_entries(samplers)
    main_reps = resolve(RunSpec("mgdm", SCALING_PRESET)).config.n_reps
    main_mgdm = next((e for e in entries if e.sampler == "mgdm" and e.preset == SCALING_PRESET), None)
    extra = list(scaling_entries(skip=main_reps if main_mgdm else None)) if scaling else []
    check_unique(entries + extra, "--samplers")
    for e in entries + extra:
        resolve(e)  # one clear error for an unknown sampler, preset or setting
    plan, source = equal_compute_plan(entries, entries + extra) if equal_compute else ([], {})
    budget_runs = [b.run for b in plan if source[b.run.name] == b.run.name]
    check_unique(entries + extra + budget_runs, "--samplers (with the equal-compute budgets)")
    rows = run_suite(entries + extra + budget_runs, suite, cache=cache, progress=progress, workers=workers)
    budget_names = {r.name for r in budget_runs}
    ec_rows = equal_compute_rows(plan, source, rows)
    rows = [r for r in rows if r["sampler"] not in budget_names]
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
        "samples, mean ± the half-width of its Student-t 95 % interval over problems; lower is better; the "
        "floor is the SW between two exact sample sets of the same size. NFE and VJP are per run (all chains in "
        "one batch; a call on k batches of chains at once, as MGDM's x0 candidates make, counts k); seconds are "
        "per run on one CPU thread.\n",
        markdown_table(main_rows, "Samplers", ""),
    ]
    paired: list[dict[str, Any]] = []
    if main_mgdm is not None:
        for other in ("dps", "diffpir"):
            won, total = wins(main_rows, main_mgdm.name, other)
            if total:
                parts.append(f"- {main_mgdm.name} has a lower mean SW than {other} in {won} of {total} settings.")
        parts.append("")
        text, paired = paired_table(main_rows, main_mgdm.name)
        parts.append(text)
    paired_more: dict[str, list[dict[str, Any]]] = {}
    for e in entries:  # every other MGDM entry (e.g. another preset) gets its own paired comparison
        if e.sampler == "mgdm" and e is not main_mgdm:
            text, paired_more[e.name] = paired_table(main_rows, e.name)
            parts.append(text)
    if scaling_rows:
        parts.append(markdown_table(scaling_rows, f"Compute scaling: MGDM ({SCALING_PRESET}) with R Gibbs sweeps", ""))
    payload = {
        "suite": suite_to_dict(suite),
        "rows": main_rows,
        "scaling_rows": scaling_rows,
        "summary": summarise(rows),
        "paired": paired,
        "paired_more": paired_more,
    }
    if equal_compute:
        note = EQUAL_COMPUTE_NOTE.format(
            sweeps=", ".join(map(str, MGDM_SWEEPS)),
            factors=", ".join(f"{f:g}" for f in FACTORS),
            grid=gmm_noise_levels().T,
        )
        parts.append(equal_compute_table(ec_rows, "sw", "Equal compute: SW against cost", setting_name, note=note))
        matched: dict[str, Any] = {}
        if main_mgdm is not None:
            text, matched = matched_section(ec_rows, "sw", main_mgdm.name, problem_key, "SW", rule=match_at)
            parts.append(text)
        payload["equal_compute"] = {"rows": ec_rows, "matched": matched}
    return payload, "\n".join(parts)


def problem_key(row: dict[str, Any]) -> tuple[int, int, int]:
    return (row["d"], row["d_y"], row["problem"])


def equal_compute_plot_path(path: Path) -> Path:
    """The equal-compute figure beside ``--plot``'s: ``gmm_scaling.png`` -> ``gmm_scaling_equal_compute.png``."""
    return path.with_name(f"{path.stem}_equal_compute{path.suffix or '.png'}")


def plot(payload: dict[str, Any], path: Path) -> None:
    """``--plot``: the scaling figure at ``path`` and, with ``--equal-compute``, SW against seconds per run and NFE +
    VJP beside it (:func:`equal_compute_plot_path`)."""
    plot_scaling(payload, path)
    ec = payload.get("equal_compute")
    if ec:
        floors: dict[str, list[float]] = defaultdict(list)
        for r in ec["rows"]:
            floors[setting_name(r)].append(r["sw_floor"])
        plot_equal_compute(
            ec["rows"],
            "sw",
            equal_compute_plot_path(path),
            setting_name,
            "sliced Wasserstein to the exact posterior",
            {k: sum(v) / len(v) for k, v in floors.items()},
            ec["matched"].get("target_seconds"),
        )


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


# ============================================================================================ command line
PLOT = (
    "plot SW against NFE (MGDM's sweeps and the other samplers); with --equal-compute also SW against seconds and "
    "NFE + VJP per run for every sampler's budgets, in NAME_equal_compute.png beside it"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``mgdm-audio benchmark gmm`` flags."""
    parser.add_argument("--quick", action="store_true", help="d in {8, 80}, d_y in {1, 2}, 5 problems, 1000 samples")
    parser.add_argument(
        "--samplers",
        metavar="A,B",
        help="only these samplers (registry names), and/or extra runs [NAME=]sampler:preset[:key=value...]",
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the MGDM Gibbs-sweep scaling run")
    parser.add_argument(
        "--equal-compute",
        action="store_true",
        help="also run every posterior sampler at 3-4 budgets (MGDM: R = 1, 2, 4 sweeps; the others: x0.25, x0.5, "
        "x1, x2 their steps) and compare them with MGDM at matched seconds per run (a table, and a plot with --plot)",
    )
    parser.add_argument(
        "--match-at",
        choices=MATCH_RULES,
        default="closest",
        help="--equal-compute's target seconds: closest (default), the MGDM budget the other samplers' budgets come "
        "closest to; median, the median of MGDM's budgets",
    )
    parser.add_argument(
        "--seed-base",
        type=int,
        default=0,
        help="seed base of the problems: 0 (default) the committed test problems, 500000 the validation problems the "
        "presets were tuned on; problem i of setting (d, d_y) uses seed base + 10007 d + 101 d_y + i, so a base far "
        "from both (e.g. 900000) gives new problems",
    )
    parser.add_argument(
        "--problems",
        type=int,
        default=None,
        metavar="N",
        help="problems per setting (default: the suite's, 5 with --quick and 20 without); problem i is the same "
        "whatever N, so a larger N adds problems",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs this process may use)")


def run(args: argparse.Namespace) -> Report:
    """``mgdm-audio benchmark gmm``: the flags checked, the suite run, its report."""
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()] if args.samplers else None
    if args.workers is None:
        from mgdm_audio.core.threads import available_cpus

        args.workers = available_cpus()
    if args.workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {args.workers}.")
    if not 0 <= args.seed_base < 2**62:
        raise UserInputError(f"--seed-base must be an integer in [0, 2**62), got {args.seed_base}.")
    if args.problems is not None and args.problems < 1:
        raise UserInputError(f"--problems must be at least 1, got {args.problems}.")
    suite = QUICK if args.quick else FULL
    payload, text = run_benchmark(
        dataclasses.replace(suite, seed_base=args.seed_base, n_problems=args.problems or suite.n_problems),
        samplers=samplers,
        scaling=not args.no_scaling,
        cache=cache_file(args.cache),
        workers=args.workers,
        progress=not args.no_progress,
        label="quick" if args.quick else "full",
        equal_compute=args.equal_compute,
        match_at=args.match_at,
    )
    return Report(payload, text, lambda path: plot(payload, path), device="cpu")  # exact mixture: no weights
