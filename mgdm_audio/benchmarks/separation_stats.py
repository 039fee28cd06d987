r"""The separation benchmark's statistics: per-chunk rows, paired differences with t intervals, and the
equal-compute table and plot.

Per (run, chunk) the score is the chunk's mean SI-SDRi over stems, :math:`m_{r,c} = \frac1S \sum_k
\mathrm{SI\text{-}SDRi}_{r,c,k}` (MSDM's per-chunk protocol, :mod:`mgdm_audio.metrics.sisdr`). A run's level is the
mean of :math:`m_{r,c}` over chunks with its Student-t 95 % interval; two runs ``a`` and ``b`` are compared on the
chunks both scored by the paired difference :math:`d_c = m_{a,c} - m_{b,c}` and its t interval
(:func:`mgdm_audio.metrics.intervals.paired_difference`): every run sees the same chunks with the same seed, so the
chunk-to-chunk spread that both share cancels. These means over chunks weight every chunk alike; the summary table's
pooled average weights chunks by their kept windows, so the two differ slightly when chunks keep different numbers of
windows. The interval treats chunks as independent draws; chunks of one track share its instruments, so with
several chunks per track it is somewhat too narrow (the seeded draw spreads chunks over tracks first).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mgdm_audio.benchmarks.harness import fmt
from mgdm_audio.core.atomic import save_figure_atomic
from mgdm_audio.metrics.intervals import Interval, paired_on_common, plain_words, t_interval


def chunk_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run, chunk) from the per-stem rows, in their order: ``{"sampler", "method", "chunk_id",
    "track", "start", "si_sdri": {stem: dB}, "si_sdri_mean", "nfe", "vjp", "seconds", "seed"}``; the mean is
    ``None`` when a stem has no score on the chunk (no kept window)."""
    grouped: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["sampler"], row["track"], int(row["chunk"]))].append(row)
    out = []
    for (label, track, start), rs in grouped.items():
        per_stem = {r["stem"]: r["si_sdri"] for r in rs}
        values = list(per_stem.values())
        scored = all(v is not None and math.isfinite(v) for v in values)
        out.append(
            {
                "sampler": label,
                "method": rs[0]["method"],
                "chunk_id": f"{track}:{start}",
                "track": track,
                "start": start,
                "si_sdri": per_stem,
                "si_sdri_mean": sum(values) / len(values) if scored and values else None,
                "nfe": rs[0]["nfe"],
                "vjp": rs[0]["vjp"],
                "seconds": rs[0]["seconds"],
                "seed": rs[0]["seed"],
            }
        )
    return out


def _by_label(chunks: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{label: {chunk_id: chunk row}}`` in run order."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for c in chunks:
        out.setdefault(c["sampler"], {})[c["chunk_id"]] = c
    return out


def run_levels(chunks: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run: the t interval of its per-chunk mean SI-SDRi (``None`` without any scored chunk), and NFE, VJP and
    seconds per chunk (means over its chunks)."""
    out = {}
    for label, rows in _by_label(chunks).items():
        scores = [r["si_sdri_mean"] for r in rows.values() if r["si_sdri_mean"] is not None]
        n = len(rows)
        out[label] = {
            "method": next(iter(rows.values()))["method"],
            "si_sdri": t_interval(scores).as_dict() if scores else None,
            "nfe_per_chunk": sum(r["nfe"] for r in rows.values()) / n,
            "vjp_per_chunk": sum(r["vjp"] for r in rows.values()) / n,
            "seconds_per_chunk": sum(r["seconds"] for r in rows.values()) / n,
        }
    return out


def paired(chunks: Sequence[dict[str, Any]], a: str, b: str) -> Interval | None:
    """``a - b`` over the chunks both scored (``None`` when they share none)."""
    runs = _by_label(chunks)
    scores = [{c: r["si_sdri_mean"] for c, r in runs[x].items() if r["si_sdri_mean"] is not None} for x in (a, b)]
    found = paired_on_common(*scores)
    return None if found is None else found[0]


def comparison_pairs(samplers: Sequence[str], reference: str | None, baselines: Sequence[str]) -> list[tuple[str, str]]:
    """Each sampler run against the reference run (if any, itself excluded), then each against every baseline."""
    pairs = [(s, reference) for s in samplers if reference is not None and s != reference]
    pairs += [(s, b) for b in baselines for s in samplers]
    return pairs


def paired_differences(chunks: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """JSON rows ``{"a", "b", "difference": interval dict, "words"}`` for the pairs that share a scored chunk."""
    out = []
    for a, b in pairs:
        diff = paired(chunks, a, b)
        if diff is not None:
            out.append({"a": a, "b": b, "difference": diff.as_dict(), "words": plain_words(diff)})
    return out


def markdown_sections(levels: dict[str, dict[str, Any]], differences: Sequence[dict[str, Any]]) -> list[str]:
    """Two sections: "Paired differences" (one line per pair, in words) and "Equal compute" (each run's mean
    per-chunk SI-SDRi with its interval beside its cost)."""
    lines = [
        "### Paired differences",
        "",
        "Per chunk, the mean SI-SDRi over stems; per pair, the mean over the chunks both runs scored of their "
        "difference (first minus second), with a Student-t 95 % interval over chunks. *Ahead* / *behind*: the "
        "interval excludes 0; *level with*: it holds 0, so these chunks cannot tell the two apart. Chunks are "
        "treated as independent (several chunks of one track make the interval somewhat too narrow).",
        "",
    ]
    if not differences:
        lines.append("No pair to compare (one run only).")
    for d in differences:
        lines.append(f"- {d['a']} vs {d['b']}: {d['words']}, n = {d['difference']['n']} chunks")
    lines += [
        "",
        "### Equal compute",
        "",
        "Mean over chunks of the per-chunk mean SI-SDRi with its t 95 % interval, beside the cost per chunk "
        "(network calls without gradient, NFE, and with one, VJP; wall seconds on this machine).",
        "",
        "| run | SI-SDRi (dB) [95 % CI] | n | NFE | VJP | NFE + VJP | s/chunk |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, lv in levels.items():
        ci = lv["si_sdri"]
        score = "–" if ci is None else _bracket(ci)
        n = 0 if ci is None else ci["n"]
        nfe, vjp = lv["nfe_per_chunk"], lv["vjp_per_chunk"]
        lines.append(
            f"| {label} | {score} | {n} | {nfe:.0f} | {vjp:.0f} | {nfe + vjp:.0f} | {lv['seconds_per_chunk']:.2f} |"
        )
    return lines + [""]


def _bracket(ci: dict[str, Any]) -> str:
    if ci["lo"] is None:
        return f"{fmt(ci['mean'])} [n = {ci['n']}]"
    return f"{fmt(ci['mean'])} [{fmt(ci['lo'])}, {fmt(ci['hi'])}]"


FLOOR_DB = -10.0
"""The plot's lowest SI-SDRi: runs below it (a diverged sampler) are named under the axes instead."""


def plot_equal_compute(
    levels: dict[str, dict[str, Any]],
    groups: dict[str, str],
    lines: dict[str, tuple[str, str, float]],
    path: Path,
) -> None:
    """Mean per-chunk SI-SDRi with t 95 % error bars against seconds per chunk (left) and NFE + VJP per chunk
    (right), log x, one point per run; runs of one ``groups`` value (e.g. a sampler at several budgets) joined in
    cost order; the runs in ``lines`` (oracles, baselines: line style, colour, label position in axes fraction) as
    horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    # distinct colours, the same in both panels, none of them a reference line's (tab:green, tab:olive, gray)
    taken = {matplotlib.colors.to_hex(c) for c in ("tab:green", "tab:olive", "tab:gray", "gray", "black")}
    palette = [
        c for c in (*plt.cm.tab20.colors[::2], *plt.cm.tab20.colors[1::2]) if matplotlib.colors.to_hex(c) not in taken
    ]
    colour = {g: palette[i % len(palette)] for i, g in enumerate(dict.fromkeys(groups.values()))}
    for ax, cost, xlabel in (
        (axes[0], lambda lv: lv["seconds_per_chunk"], "seconds per chunk"),
        (axes[1], lambda lv: lv["nfe_per_chunk"] + lv["vjp_per_chunk"], "NFE + VJP per chunk"),
    ):
        by_group: dict[str, list[tuple[float, dict[str, Any], str]]] = defaultdict(list)
        for label, lv in levels.items():
            ci = lv["si_sdri"]
            if ci is None:
                continue
            if label in lines:
                ls, color, x = lines[label]
                ax.axhline(ci["mean"], ls=ls, lw=1, color=color)
                ax.annotate(label, (x, ci["mean"]), xycoords=("axes fraction", "data"), fontsize=7)
            elif label in groups and cost(lv) > 0:
                by_group[groups[label]].append((cost(lv), ci, label))
        for group, points in by_group.items():
            points.sort(key=lambda p: p[0])
            xs = [p[0] for p in points]
            ys = [p[1]["mean"] for p in points]
            err = [
                [0.0 if p[1]["lo"] is None else p[1]["mean"] - p[1]["lo"] for p in points],
                [0.0 if p[1]["hi"] is None else p[1]["hi"] - p[1]["mean"] for p in points],
            ]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=2, lw=1.2, label=group, color=colour[group])
            # one name per curve, at its costliest point (every point's label overlapped the others)
            ax.annotate(
                group,
                (xs[-1], ys[-1]),
                fontsize=6,
                xytext=(4, 0),
                textcoords="offset points",
                color=colour[group],
                va="center",
            )
        ax.set_xscale("log")
        ax.margins(x=0.15)
        ax.set_xlabel(xlabel)
        ax.axhline(0.0, color="black", lw=0.6)
    below = [
        f"{label} ({lv['si_sdri']['mean']:.1f} dB)"
        for label, lv in levels.items()
        if lv["si_sdri"] is not None and lv["si_sdri"]["mean"] < FLOOR_DB
    ]
    if below:  # a diverged run would squash every other curve: clip, and say which
        axes[0].set_ylim(bottom=FLOOR_DB)
        fig.text(0.01, 0.005, "below the axis: " + ", ".join(below), fontsize=7)
    axes[0].set_ylabel("mean SI-SDRi per chunk (dB), t 95 % CI")
    legend: dict[str, Any] = {}  # both panels' curves (a run with no cost on one axis is drawn on the other only)
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    handles, names = list(legend.values()), list(legend)
    if handles:
        axes[1].legend(handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
