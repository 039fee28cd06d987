"""Choose the warm start's noise level S on the validation split only (issue 24), then print the test command.

Runs the separation benchmark engine (mgdm_audio/benchmarks/separation.py) on ``validation_opl3`` of the diverse
data with the discriminative separator alone, cold MGDM and MGDM warm-started at every S of the grid (one sample
each, the same per-chunk seeds), writes the table to ``evaluation/separator/init_sigma_validation.{json,md}`` and
prints the S with the best average SI-SDRi (ties: the smaller S, which costs fewer steps). The test table
(``test_opl3``, the separator, cold MGDM, warm MGDM with one sample and the mean of 4) is then run with that S only.

    OMP_NUM_THREADS=1 nice -n 10 python evaluation/separator/choose_init_sigma.py --init EXPORT [--max-chunks 32]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mgdm_audio.cli import main as cli

#: Noise levels of the grid (VE units of chunks scaled to the prior's training mixture RMS, about 0.06), each just
#: above a level of MGDM's `fast` grid on the prior's table (0.031, 0.170, 0.501, 1.106, 2.069, 3.454, ..., 19.94):
#: the warm start starts at that level and runs the rest of the grid (a level between two grid levels adds nothing).
#: 0.05 and 0.2 both end in one denoising call, from the estimate noised to 0.031 (about +6 dB SNR) or to 0.170
#: (about -9 dB: most of the estimate is buried); 0.05 was added after the first grid's best was its smallest level.
GRID = (0.05, 0.2, 0.6, 1.2, 2.2, 3.5)
HERE = Path(__file__).resolve().parent


def sampler_set(grid: tuple[float, ...], preset: str = "fast") -> str:
    """``demucs``, ``cold`` and one ``warm-S`` run per level, in the benchmark's ``--sampler-set`` syntax."""
    runs = ["demucs=demucs", f"cold=mgdm:{preset}"]
    runs += [f"warm-{s:g}=mgdm:{preset}:init_sigma={s:g}" for s in grid]
    return ",".join(runs)


def best_sigma(summary: dict, grid: tuple[float, ...]) -> float:
    """The S of the best average SI-SDRi (the smaller S on a tie)."""
    scores = {s: summary[f"warm-{s:g}"]["si_sdri_average"] for s in grid}
    return max(sorted(scores), key=lambda s: (scores[s] if scores[s] is not None else float("-inf"), -s))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", required=True, help="the separator's export folder")
    p.add_argument("--prior", default="slakh-style-small", help="the diffusion prior (name or export folder)")
    p.add_argument("--root", default="/work/data/slakh-diverse")
    p.add_argument("--split", default="validation_opl3", help="a validation split (never a test split)")
    p.add_argument("--max-chunks", type=int, default=32)
    p.add_argument("--out", default=str(HERE / "init_sigma_validation"), help="output path without extension")
    args = p.parse_args(argv)
    if "test" in args.split:
        print("choose S on a validation split only.", file=sys.stderr)
        return 2
    out = Path(args.out)
    common = ["benchmark", "separation", "--root", args.root, "--layout", "slakh", "--split", args.split]
    code = cli(
        [
            *common,
            *("--prior", args.prior, "--init", args.init, "--samplers", "", "--no-oracles"),
            *("--sampler-set", sampler_set(GRID), "--max-chunks", str(args.max_chunks), "--threads", "1"),
            *("--json", f"{out}.json", "--markdown", f"{out}.md", "--cache", f"{out}.cache.jsonl", "--no-progress"),
        ]
    )
    if code != 0:
        return code
    summary = json.loads(Path(f"{out}.json").read_text())["summary"]
    sigma = best_sigma(summary, GRID)
    print(f"chosen init sigma on {args.split}: {sigma:g}")
    test_set = f"demucs=demucs,cold=mgdm:fast,warm=mgdm:fast:init_sigma={sigma:g}"
    test_set += f",warm-mean4=mgdm:fast:init_sigma={sigma:g}:n_samples=4"
    test = [*common[:-1], "test_opl3", "--prior", args.prior, "--init", args.init, "--samplers", "''"]
    test += ["--sampler-set", test_set, "--max-chunks", "40"]
    print("test table: mgdm-audio", " ".join(test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
