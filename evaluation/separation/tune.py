"""Equal validation budget (issue 25): every audio sampler's points of ``tuning.yaml`` on a validation split.

Every point (a sampler at its reference audio preset, or with one of the grid's overrides) runs through the
separation benchmark's engine (:mod:`mgdm_audio.benchmarks.separation`: the same chunks, the same per-chunk seeds,
the same separator settings and scoring, a resumable cache). Per sampler the point with the best mean SI-SDRi (the
average over stems of MSDM's pooled per-stem SI-SDRi) is chosen. Writes ``--out`` + ``.json`` (every point's
summary, the chosen ones, the per-chunk rows) and ``.md`` (one table of every point tried), both with the harness's
provenance (the command, the commit, the prior's weight hash, the machine). Refuses a split whose name starts with
``test``.

    OMP_NUM_THREADS=1 python evaluation/separation/tune.py --root /work/data/slakh-diverse --split validation_opl3 \\
        --prior slakh-style-small --max-chunks 30 --cache evaluation/results/separation_tuning.cells.jsonl

``--samplers`` and ``--points N`` (the first N points of each) make a smaller run of the same file. Under
``torchrun --nproc_per_node K`` (with ``--cache``) the chunks are dealt to K processes, as in the benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("tuning.yaml")
OUT = ROOT / "evaluation/results/separation_tuning"


def load_points(path: Path, samplers: list[str] | None, n_points: int | None) -> dict[str, dict[str, Any]]:
    """``{sampler: {"preset", "parameter", "points"}}`` of the tuning file (every sampler the same number of points),
    restricted to ``samplers`` and to the first ``n_points`` points of each."""
    from mgdm_audio.core.errors import UserInputError

    if not path.is_file():
        raise UserInputError(f"the tuning file {path} does not exist; give one with --config.")
    document = yaml.safe_load(path.read_text())
    table: dict[str, dict[str, Any]] = document["samplers"]
    budget = int(document["points_per_sampler"])
    unequal = {name: len(entry["points"]) for name, entry in table.items() if len(entry["points"]) != budget}
    if unequal:
        raise UserInputError(f"{path} gives every sampler {budget} points, but these have another count: {unequal}.")
    if samplers:
        unknown = sorted(set(samplers) - set(table))
        if unknown:
            raise UserInputError(f"--samplers {', '.join(unknown)} not in {path}; it lists {', '.join(table)}.")
        table = {name: table[name] for name in samplers}
    if n_points is not None:
        if not 1 <= n_points <= budget:
            raise UserInputError(f"--points must be between 1 and {budget}, got {n_points}.")
        table = {name: {**entry, "points": entry["points"][:n_points]} for name, entry in table.items()}
    return table


def point_label(sampler: str, index: int) -> str:
    return f"{sampler}-p{index}"


def run_specs(table: dict[str, dict[str, Any]]) -> list[Any]:
    """One labelled run per point: ``SAMPLER-pI = sampler:preset:overrides``."""
    from mgdm_audio.samplers.run import RunSpec

    runs = []
    for sampler, entry in table.items():
        for i, overrides in enumerate(entry["points"]):
            runs.append(
                RunSpec(sampler, entry["preset"], tuple(sorted((overrides or {}).items())), point_label(sampler, i))
            )
    return runs


def choose(table: dict[str, dict[str, Any]], summary: dict[str, Any]) -> dict[str, str]:
    """Per sampler, the label of the point with the best mean SI-SDRi (the first of equals; missing scores last)."""
    best = {}
    for sampler, entry in table.items():
        labels = [point_label(sampler, i) for i in range(len(entry["points"]))]
        scores = [summary[label]["si_sdri_average"] for label in labels]
        best[sampler] = max(zip(labels, scores, strict=True), key=lambda p: -1e9 if p[1] is None else p[1])[0]
    return best


def markdown(document: dict[str, Any]) -> str:
    from mgdm_audio.benchmarks.harness import fmt

    info, chosen = document["info"], document["chosen"]
    lines = [
        f"# Sampler settings chosen on `{info['split']}` with an equal budget per sampler (issue 25)",
        "",
        f"Prior `{info['prior']}` (weights sha256 `{info['weights_sha256'][:12]}`), {info['chunks']} chunks of "
        f"{info['chunk_seconds']:.2f} s from {info['tracks']} tracks of `{info['root']}/{info['split']}`, seed "
        f"{info['seed']} (every point gets the same chunks and the same seed on a chunk), device {info['device']}; "
        f"{document['points_per_sampler']} points per sampler from `evaluation/separation/tuning.yaml`.",
        "",
        "Mean SI-SDRi: the average over stems of MSDM's pooled per-stem SI-SDRi (dB); NFE, VJP and seconds per chunk. "
        "**bold**: the chosen point of each sampler (best mean SI-SDRi).",
        "",
        "| sampler | point | preset | overrides | mean SI-SDRi | NFE | VJP | s/chunk |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in document["points"]:
        mark = "**" if p["label"] == chosen[p["sampler"]] else ""
        overrides = json.dumps(p["overrides"], sort_keys=True) if p["overrides"] else "–"
        lines.append(
            f"| {p['sampler']} | {mark}{p['label']}{mark} | {p['preset']} | {overrides} | "
            f"{mark}{fmt(p['si_sdri_average'])}{mark} | {p['nfe_per_chunk']:.0f} | {p['vjp_per_chunk']:.0f} | "
            f"{p['seconds_per_chunk']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="dataset root holding the split folder")
    parser.add_argument("--layout", default="slakh", choices=["slakh", "musdb"])
    parser.add_argument("--split", required=True, help="a validation split (names starting with 'test' are refused)")
    parser.add_argument("--prior", default="slakh-style-small", help="shipped prior name or export folder")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the points (default: tuning.yaml beside this)")
    parser.add_argument("--samplers", default=None, metavar="A,B", help="only these samplers of the file")
    parser.add_argument("--points", type=int, default=None, help="only the first N points of each sampler")
    parser.add_argument("--max-chunks", type=int, default=None, help="first N chunks of the seeded order")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="chunk length (default: the prior's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="JSON-lines cache of finished cells; a killed run resumes")
    parser.add_argument("--out", type=Path, default=OUT, help="output prefix: writes PREFIX.json and PREFIX.md")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: OMP_NUM_THREADS or adaptive)")
    parser.add_argument("-d", "--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from mgdm_audio.core.threads import configure

    configure(args.threads or None)  # before torch is loaded
    from mgdm_audio.benchmarks import separation as sb
    from mgdm_audio.benchmarks.harness import (
        Report,
        git_state,
        write_outputs,
    )
    from mgdm_audio.core.errors import UserInputError

    code = git_state()  # the code the numbers come from: the checkout may change while the run goes on

    try:
        if args.split.lower().startswith("test"):
            raise UserInputError(
                f"--split {args.split} is a test split; settings are chosen on validation splits only."
            )
        samplers = [s.strip() for s in args.samplers.split(",") if s.strip()] if args.samplers else None
        table = load_points(args.config, samplers, args.points)
        runs = run_specs(table)
        setup, rows = sb.prepare_and_run(  # under torchrun: chunks dealt to the ranks, rank 0 merges and writes
            args.root,
            args.layout,
            args.split,
            args.prior,
            runs,
            max_chunks=args.max_chunks,
            seed=args.seed,
            chunk_seconds=args.chunk_seconds,
            device=args.device,
            cache=args.cache,
            progress=not args.no_progress,
        )
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if rows is None:
        return 0  # a rank other than 0: rank 0 merges the results and writes the outputs
    summary = sb.summarise(rows)
    chosen = choose(table, summary)
    points = []
    for run in runs:
        s = summary[run.name]
        keep = ("si_sdri_average", "si_sdri", "si_sdri_nonsilent_average", "nfe_per_chunk", "vjp_per_chunk")
        points.append(
            {
                "sampler": run.sampler,
                "label": run.name,
                "preset": run.preset,
                "overrides": run.overrides_dict,
                **{k: s[k] for k in keep},
                "seconds_per_chunk": s["seconds_per_chunk"],
                "chosen": chosen[run.sampler] == run.name,
            }
        )
    document = {
        "info": setup.info,
        "points_per_sampler": len(next(iter(table.values()))["points"]),
        "parameters": {name: entry.get("parameter", "") for name, entry in table.items()},
        "chosen": chosen,
        "points": points,
        "rows": rows,
    }
    text = markdown(document)
    report = Report(document, text, weights_sha256=setup.info["weights_sha256"] or None, device=setup.info["device"])
    write_outputs(report, f"{args.out}.json", f"{args.out}.md", None, None, git=code)  # command: python + argv
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
