r"""Equal compute: every sampler at a few budgets, its score against seconds per run (and NFE + VJP), and the
comparison at matched seconds.

**Budgets.** Each sampler has one knob that sets its cost (:data:`KNOBS`): the number of reverse steps, annealing
levels or split-Gibbs iterations, and for MGDM the Gibbs sweeps ``R``. A run at preset ``p`` with knob value ``v``
gets the budgets ``round(f v)`` for ``f`` in :data:`FACTORS` (0.25, 0.5, 1, 2); a knob that counts steps on the
prior's ``T``-level grid cannot exceed ``T``, so when ``2 v > T`` the factors are :data:`CAPPED_FACTORS` (0.125 ..
1). MGDM's budgets are ``R`` in :data:`MGDM_SWEEPS` whatever its preset's ``R`` (R = 8 is left out: it costs twice
any other sampler's dearest budget, so nothing is matched to it). PnP-DM keeps the span of its coupling schedule
``rho_k = max(rho_0 d^k, rho_min)`` on ``K' = f K`` iterations with ``d' = d^{K / K'}``, and MSDM's sampler its churn
per step ``S_churn / N`` on ``N' = f N`` steps (``S_churn' = f S_churn``).

Separation (:data:`AUDIO_KNOBS`, :data:`AUDIO_FACTORS`): every sampler's ``audio-fast`` preset is set to about
MGDM ``audio-fast``'s network calls per segment, so the budgets are x0.25, x0.5 and x1 of it, and MGDM's knob is its
number of diffusion steps (its audio presets make one Gibbs sweep; below 4 steps no VI step is left).

**Matching.** With ``s_b`` the mean seconds per run of budget ``b`` (over every problem), every sampler is taken at
its budget nearest a target ``s*`` on a log scale, ``argmin_b |log s_b - log s*|`` (ties: the cheaper budget), among
its budgets whose scores are all finite. The target is one of the reference sampler's budgets ``b_1..b_m``:

* ``closest`` (default): the one the other samplers can be matched to best, ``s* = argmin_{s_{b_j}} sum_k min_b
  |log s^k_b - log s_{b_j}|`` over the other samplers ``k`` (ties: the cheaper); the reference is then taken at that
  budget itself. When the others' budgets do not reach the reference's dearest ones, this is where equal seconds
  can be compared at all;
* ``median``: ``s* = median(s_{b_1}, ..., s_{b_m})``, and the reference at its budget nearest it.

The reference minus each sampler is then the paired difference over the items (problems) both ran, with its
Student-t 95 % interval
(:func:`mgdm_audio.metrics.intervals.paired_difference`).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgdm_audio.core.atomic import save_figure_atomic
from mgdm_audio.metrics.intervals import Interval, paired_on_common, plain_words, t_interval
from mgdm_audio.samplers.run import RunSpec, resolve

FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
CAPPED_FACTORS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
MGDM_SWEEPS: tuple[int, ...] = (1, 2, 4)
AUDIO_FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0)

Row = dict[str, Any]


@dataclass(frozen=True)
class Knob:
    """The config field that sets a sampler's cost, its smallest value, and whether it counts steps on the prior's
    ``T``-level grid (then at most ``T``)."""

    field: str
    minimum: int = 1
    on_grid: bool = False


KNOBS: dict[str, Knob] = {
    "mgdm": Knob("n_reps"),
    "dps": Knob("n_steps", 3, on_grid=True),
    "pigdm": Knob("n_steps", 3, on_grid=True),
    "diffpir": Knob("n_steps", 3, on_grid=True),
    "ddrm": Knob("n_steps", 3, on_grid=True),
    "reddiff": Knob("n_steps", 3, on_grid=True),
    "ddim": Knob("n_steps", 3, on_grid=True),
    "daps": Knob("annealing_steps"),
    "pnpdm": Knob("n_iters"),
    "msdm": Knob("n_steps", 2),
    "vml_map": Knob("n_levels", 2),
}
AUDIO_KNOBS: dict[str, Knob] = {**KNOBS, "mgdm": Knob("n_steps", 4, on_grid=True)}


@dataclass(frozen=True)
class Budget:
    """One budget of a run: the run it scales (``base``, its label names the curve), the knob's value, the factor
    on the preset's value (``None`` for MGDM's sweeps) and the run spec that computes it."""

    base: str
    knob: str
    value: int
    factor: float | None
    run: RunSpec

    @property
    def label(self) -> str:
        return budget_label(self.knob, self.value, self.factor)


def budget_label(knob: str, value: int, factor: float | None) -> str:
    """``R=2`` for MGDM's sweeps, ``n_steps=250 (x0.25)`` otherwise."""
    if knob == "n_reps":
        return f"R={value}"
    return f"{knob}={value} (x{factor:g})"


def budgets(
    run: RunSpec,
    grid_size: int | None,
    factors: Sequence[float] = FACTORS,
    knobs: Mapping[str, Knob] = KNOBS,
    modality: str = "plain",
) -> list[Budget]:
    """The budgets of ``run`` (empty when its sampler has no knob in ``knobs``); ``grid_size``: the prior's ``T``
    (``None``: no cap, for factors that never pass the preset's own value);
    ``factors``: the multiples of the preset's knob value (:data:`CAPPED_FACTORS` instead when twice the value would
    pass the grid and the factors reach 2); ``modality``: how the run's preset resolves
    (:data:`mgdm_audio.samplers.run.MODALITIES`)."""
    knob = knobs.get(run.sampler)
    if knob is None:
        return []
    config = resolve(run, modality).config
    base_value = int(getattr(config, knob.field))
    if knob.field == "n_reps":
        plan: list[tuple[int, float | None]] = [(r, None) for r in MGDM_SWEEPS]
    else:
        if knob.on_grid and grid_size is not None and max(factors) * base_value > grid_size:
            factors = CAPPED_FACTORS
        plan = [(max(knob.minimum, math.floor(f * base_value + 0.5)), f) for f in factors]
    out, seen = [], set()
    for value, factor in plan:
        if value in seen or (knob.on_grid and grid_size is not None and value > grid_size):
            continue
        seen.add(value)
        overrides = {**run.overrides_dict, knob.field: value}
        if run.sampler == "pnpdm":  # the same span of rho on value iterations
            overrides["rho_decay"] = config.rho_decay ** (base_value / value)
        if run.sampler == "msdm":  # the same churn per step on value steps
            overrides["s_churn"] = config.s_churn * value / base_value
        label = f"{run.name} {knob.field}={value}"
        out.append(
            Budget(
                run.name,
                knob.field,
                value,
                factor,
                RunSpec(run.sampler, run.preset, tuple(sorted(overrides.items())), label),
            )
        )
    return out


def nearest_budget(seconds: Mapping[Hashable, float], target: float) -> Hashable:
    """The budget whose seconds are nearest ``target`` on a log scale (ties: the cheaper one)."""
    if not seconds:
        raise ValueError("no budget to choose from")
    return min(seconds, key=lambda b: (abs(math.log(seconds[b] / target)), seconds[b]))


@dataclass(frozen=True)
class Match:
    """The matched budgets: the target seconds, the rule that chose it and, per sampler, the budget nearest it."""

    target: float
    rule: str
    chosen: dict[str, Hashable]


MATCH_RULES: tuple[str, ...] = ("closest", "median")


def match_target(seconds: Mapping[str, Mapping[Hashable, float]], reference: str, rule: str = "closest") -> float:
    """The target seconds per run of ``rule`` (module docstring) from ``seconds[sampler][budget]``."""
    own = sorted(seconds.get(reference, {}).values())
    if not own:
        raise ValueError(f"the reference {reference!r} has no budget")
    if rule == "median":
        return statistics.median(own)
    if rule != "closest":
        raise ValueError(f"unknown matching rule {rule!r}; choose one of {MATCH_RULES}")
    others = [list(per.values()) for name, per in seconds.items() if name != reference and per]

    def mismatch(target: float) -> float:
        return sum(min(abs(math.log(s / target)) for s in per) for per in others)

    return min(own, key=mismatch)  # sorted: ties go to the cheaper budget


def match_budgets(seconds: Mapping[str, Mapping[Hashable, float]], reference: str, rule: str = "closest") -> Match:
    """``seconds[sampler][budget]``: mean seconds per run. The target (:func:`match_target`) and, for every sampler
    (the reference too), its budget nearest it (:func:`nearest_budget`)."""
    target = match_target(seconds, reference, rule)
    return Match(target, rule, {name: nearest_budget(per, target) for name, per in seconds.items() if per})


# ============================================================================================ summaries
def by_budget(rows: Sequence[Row]) -> dict[tuple[str, Any], list[Row]]:
    """Rows grouped by ``(sampler, budget)`` in first-seen order."""
    groups: dict[tuple[str, Any], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["sampler"], r["budget"])].append(r)
    return dict(groups)


def budget_labels(rows: Sequence[Row]) -> dict[tuple[str, Any], str]:
    """``{(sampler, budget): its label}`` (``budget_label``, else the budget's value)."""
    return {(r["sampler"], r["budget"]): str(r.get("budget_label", r["budget"])) for r in rows}


def finite(rows: Sequence[Row], metric: str) -> bool:
    return all(math.isfinite(r[metric]) for r in rows)


def interval_cell(values: Sequence[float], digits: int) -> str:
    """``mean [lo, hi]`` of the t 95 % interval, ``mean [n = 1]`` for one value, the count of non-finite ones."""
    bad = sum(not math.isfinite(v) for v in values)
    if bad:
        return f"– ({bad} of {len(values)} non-finite)"
    ci = t_interval(values)
    if not ci.defined:
        return f"{ci.mean:.{digits}f} [n = {ci.n}]"
    return f"{ci.mean:.{digits}f} [{ci.lo:.{digits}f}, {ci.hi:.{digits}f}]"


def mean_seconds(rows: Sequence[Row], metric: str) -> dict[str, dict[Any, float]]:
    """``{sampler: {budget: mean seconds per run}}`` over the budgets whose scores are all finite."""
    out: dict[str, dict[Any, float]] = defaultdict(dict)
    for (name, budget), rs in by_budget(rows).items():
        if finite(rs, metric):
            out[name][budget] = sum(r["seconds"] for r in rs) / len(rs)
    return dict(out)


def equal_compute_table(
    rows: Sequence[Row],
    metric: str,
    title: str,
    strata: Callable[[Row], str] | None = None,
    digits: int = 3,
    note: str = "",
    items: str = "problems",
) -> str:
    """One row per sampler and budget (cheapest first): the mean of ``metric`` with its t 95 % interval over all
    ``items`` (and per stratum when ``strata`` is given), mean NFE, VJP and seconds per run."""
    groups = by_budget(rows)
    names = list(dict.fromkeys(name for name, _ in groups))
    labels = budget_labels(rows)
    columns = list(dict.fromkeys(strata(r) for r in rows)) if strata else []
    head = "| sampler | budget | " + "".join(f"{c} | " for c in columns) + f"all {items} | NFE | VJP | s/run |"
    lines = [f"### {title}", "", *([note, ""] if note else []), head, "|" + "---|" * (len(columns) + 6)]
    for name in names:
        mine = [(b, rs) for (n, b), rs in groups.items() if n == name]
        mine.sort(key=lambda item: sum(r["seconds"] for r in item[1]))
        for budget, rs in mine:
            cells = (
                [interval_cell([r[metric] for r in rs if strata(r) == c], digits) for c in columns] if strata else []
            )
            cost = [sum(r[k] for r in rs) / len(rs) for k in ("nfe", "vjp", "seconds")]
            lines.append(
                f"| {name} | {labels[(name, budget)]} | "
                + "".join(f"{c} | " for c in cells)
                + f"{interval_cell([r[metric] for r in rs], digits)} | {cost[0]:.0f} | {cost[1]:.0f} | {cost[2]:.3f} |"
            )
    return "\n".join(lines) + "\n"


def paired_at(
    rows: Sequence[Row], metric: str, item: Callable[[Row], Hashable], a: tuple[str, Any], b: tuple[str, Any]
) -> tuple[Interval, int] | None:
    """``metric`` of run ``a = (sampler, budget)`` minus that of ``b`` over the items both ran: the t 95 % interval
    and on how many items ``a`` is lower."""
    values: dict[tuple[str, Any], dict[Hashable, float]] = {a: {}, b: {}}
    for r in rows:
        key = (r["sampler"], r["budget"])
        if key in values:
            values[key][item(r)] = r[metric]
    return paired_on_common(values[a], values[b])


def matched_section(
    rows: Sequence[Row],
    metric: str,
    reference: str,
    item: Callable[[Row], Hashable],
    unit: str,
    digits: int = 3,
    items: str = "problems",
    rule: str = "closest",
    higher_is_better: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The comparison at matched seconds (module docstring; ``rule`` picks the target): Markdown and JSON. ``metric``
    is better lower (SW) unless ``higher_is_better`` (SI-SDRi)."""
    seconds = mean_seconds(rows, metric)
    if reference not in seconds:
        return "", {}
    match = match_budgets(seconds, reference, rule)
    labels = budget_labels(rows)
    ref_budget = match.chosen[reference]
    how = (
        f"the median of {reference}'s seconds per run over its budgets"
        if rule == "median"
        else f"the seconds of {reference}'s budget that the other samplers' budgets come closest to (the least sum "
        "over samplers of the log-distance to their nearest budget)"
    )
    better = "higher" if higher_is_better else "lower"
    lines = [
        f"### Equal compute at matched seconds: {reference} minus each sampler",
        "",
        f"Target {match.target:.3f} s per run: {how}; seconds are means over all {items}. Each sampler at its budget "
        "whose seconds per run are nearest the target (log scale), "
        f"{reference} at {labels[(reference, ref_budget)]} ({seconds[reference][ref_budget]:.3f} s). Mean {unit} "
        f"difference over the {items} both ran, paired, with its Student-t 95 % interval (negative: {reference} has "
        f"the lower {unit}); 'ahead' means a {better} {unit}, 'level with' an interval that holds 0. The ratio is the "
        "sampler's seconds over the target: far from 1, its budgets do not reach the target and the comparison is at "
        "its nearest budget, not at equal seconds.",
        "",
        f"| vs | its budget | its s/run (ratio) | {reference} − it [t 95 %] | {reference} {better} on | in words |",
        "|---|---|---|---|---|---|",
    ]
    out: dict[str, Any] = {
        "reference": reference,
        "target_seconds": match.target,
        "rule": rule,
        "reference_budget": ref_budget,
        "reference_seconds": seconds[reference][ref_budget],
        "versus": [],
    }
    for name, budget in match.chosen.items():
        if name == reference:
            continue
        found = paired_at(rows, metric, item, (reference, ref_budget), (name, budget))
        if found is None:
            continue
        diff, lower = found
        if higher_is_better:
            lower = diff.n - lower  # how often it is higher (exact ties, rare, count as higher)
        words = f"{reference} " + (
            f"level with {name}"
            if diff.contains_zero
            else plain_words(diff if higher_is_better else negate(diff), unit, digits)
        )
        ratio = seconds[name][budget] / match.target
        lines.append(
            f"| {name} | {labels[(name, budget)]} | {seconds[name][budget]:.3f} ({ratio:.2g}) | "
            f"{diff.bracket(digits)} | {lower} of {diff.n} | {words} |"
        )
        out["versus"].append(
            {
                "sampler": name,
                "budget": budget,
                "seconds": seconds[name][budget],
                "ratio_to_target": ratio,
                "difference": diff.as_dict(),
                "reference_lower": lower,
                "words": words,
            }
        )
    return "\n".join(lines) + "\n", out


def negate(diff: Interval) -> Interval:
    """``-diff``: the interval of ``b - a`` from that of ``a - b``."""
    return Interval(-diff.mean, -diff.hi, -diff.lo, diff.n, diff.sd, diff.level)


# ============================================================================================ plot
def plot_equal_compute(
    rows: Sequence[Row],
    metric: str,
    path: Path,
    strata: Callable[[Row], str],
    ylabel: str,
    floors: Mapping[str, float] | None = None,
    target: float | None = None,
) -> None:
    """Per stratum, ``metric`` (mean ± t 95 % half-width) against seconds per run (top, with the matched ``target``
    seconds as a dotted line) and NFE + VJP (bottom), log x, one curve per sampler through its budgets (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(dict.fromkeys(strata(r) for r in rows))
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    fig, axes = plt.subplots(2, len(columns), figsize=(4.2 * len(columns), 7.0), squeeze=False)
    for j, column in enumerate(columns):
        here = [r for r in rows if strata(r) == column]
        for name in names:
            points = []
            for (n, _), rs in by_budget(here).items():
                if n != name or not finite(rs, metric):
                    continue
                ci = t_interval([r[metric] for r in rs])
                half = ci.hi - ci.mean if ci.defined else 0.0
                seconds = sum(r["seconds"] for r in rs) / len(rs)
                calls = sum(r["nfe"] + r["vjp"] for r in rs) / len(rs)
                points.append((seconds, calls, ci.mean, half))
            if not points:
                continue
            points.sort()
            for i, x_index in enumerate((0, 1)):
                axes[i][j].errorbar(
                    [p[x_index] for p in points],
                    [p[2] for p in points],
                    yerr=[p[3] for p in points],
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=name,
                )
        for i, xlabel in enumerate(("seconds per run", "NFE + VJP per run")):
            ax = axes[i][j]
            if floors and column in floors:
                ax.axhline(floors[column], color="gray", ls="--", lw=1, label="floor")
            if i == 0 and target is not None:
                ax.axvline(target, color="black", ls=":", lw=1, label="matched seconds (all problems)")
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(column)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
