"""Separation speed beside other busy processes: the contention rows of `evaluation/results/separation_speed.md`.

    python evaluation/separation/contention.py --input examples/bach_bwv269/mix.flac --preset fast \
        --variants auto,auto-passive,all-threads --repeats 3 --out evaluation/results/separation_speed.md

Each run is `mgdm-audio separate` on the input (or its first `--seconds`) in a fresh process, with the thread
variables this script's own environment may hold removed, so that the command's defaults are what is measured:

* `auto`: the default (the thread count from the CPUs this process may use, one fewer while another process is busy:
  `mgdm_audio/core/threads.py`; OpenMP's own wait policy);
* `auto-passive`: the same with `OMP_WAIT_POLICY=PASSIVE` (OpenMP threads sleep at once instead of spinning first);
* `all-threads`: `--threads N` with N = every available CPU, fixed (the behaviour before the thread settings);
* `one-thread`: `--threads 1`.

Scenarios, all in one invocation: `idle`; `torch` (one competing process: a torch matrix-multiply loop at torch's
default threads and wait policy); `python` (one competing pure-Python busy loop); `torch+python` (both). The
competitors start 2 s before the separation and are stopped after it. The reported real-time factor is the
separation's own (`run.json`: wall seconds of the separation / audio seconds, start-up excluded); a row is the median
of `--repeats` runs, interleaved over scenarios and variants. Target (issue 23): beside one busy process at most
2.5x the idle real-time factor of the same variant. The section between the `contention` markers of `--out` is
replaced (the rest of the file is kept; `speed.py` keeps this section when it rewrites the file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- contention:start -->", "<!-- contention:end -->"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
COMPETITORS = {
    "torch": "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a",
    "python": "while True:\n    pass",
}
SCENARIOS = {"idle": (), "torch": ("torch",), "python": ("python",), "torch+python": ("torch", "python")}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    return {**env, **extra}


def variant_args(variant: str, cpus: int) -> tuple[list[str], dict[str, str]]:
    if variant == "auto":
        return [], {}
    if variant == "auto-passive":
        return [], {"OMP_WAIT_POLICY": "PASSIVE"}
    if variant == "all-threads":
        return ["--threads", str(cpus)], {}
    if variant == "one-thread":
        return ["--threads", "1"], {}
    raise SystemExit(f"unknown variant {variant!r}; known: auto, auto-passive, all-threads, one-thread")


def excerpt(source: Path, seconds: float | None, folder: Path) -> Path:
    if seconds is None:
        return source
    audio, rate = sf.read(source, frames=int(seconds * sf.info(source).samplerate), always_2d=True)
    target = folder / f"{source.stem}_{seconds:g}s.wav"
    sf.write(target, audio, rate, subtype="FLOAT")
    return target


def separate_once(audio: Path, out: Path, prior: str, preset: str, args: list[str], env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "mgdm_audio", "separate", str(audio), "-n", prior, "-o", str(out)]
    cmd += ["--preset", preset, "--json", "--no-progress", "--force", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=clean_env(**env), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"separation failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)[0]


def measure(audio: Path, out: Path, scenario: str, variant: str, prior: str, preset: str, cpus: int) -> dict:
    competitors = [
        subprocess.Popen([sys.executable, "-c", COMPETITORS[name]], env=clean_env(), stdout=subprocess.DEVNULL)
        for name in SCENARIOS[scenario]
    ]
    try:
        if competitors:
            time.sleep(2.0)  # their start-up is over and their load is visible
        load = os.getloadavg()[0]
        args, env = variant_args(variant, cpus)
        summary = separate_once(audio, out, prior, preset, args, env)
    finally:
        for child in competitors:
            child.kill()
            child.wait()
    return {
        "scenario": scenario,
        "variant": variant,
        "real_time_factor": summary["real_time_factor"],
        "seconds": summary["seconds"],
        "audio_seconds": summary["audio_seconds"],
        "load_before": round(load, 2),
    }


def table(rows: list[dict], variants: list[str], scenarios: list[str]) -> list[str]:
    lines = [
        "| scenario | " + " | ".join(f"{v} RTF (x idle)" for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for scenario in scenarios:
        cells = []
        for variant in variants:
            mine = sorted(r["real_time_factor"] for r in rows if r["scenario"] == scenario and r["variant"] == variant)
            idle = sorted(r["real_time_factor"] for r in rows if r["scenario"] == "idle" and r["variant"] == variant)
            median = mine[len(mine) // 2]
            ratio = f" ({median / idle[len(idle) // 2]:.2f}x)" if idle and scenario != "idle" else ""
            cells.append(f"{median:.2f}{ratio}")
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return lines


def write_section(path: Path, lines: list[str]) -> None:
    text = path.read_text() if path.exists() else ""
    section = "\n".join([START, *lines, END])
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="slakh-style-small")
    p.add_argument("--input", default="examples/bach_bwv269/mix.flac")
    p.add_argument("--seconds", type=float, default=None, help="separate only the first S seconds (quick check)")
    p.add_argument("--preset", default="fast")
    p.add_argument("--variants", default="auto,auto-passive,all-threads", help="comma list (see the docstring)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ", ".join(SCENARIOS))
    p.add_argument("--repeats", type=int, default=3, help="runs per cell, interleaved; the median is shown")
    p.add_argument("--out", default="evaluation/results/separation_speed.md", help="Markdown file to update")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from mgdm_audio.audio.priors import prior_weights_sha256
    from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance
    from mgdm_audio.core.threads import available_cpus

    prov = script_provenance(prior_weights_sha256(args.prior), "cpu")  # before the runs (other processes)
    cpus = available_cpus()
    variants = [v for v in args.variants.split(",") if v]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for v in variants:
        variant_args(v, cpus)
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="contention-") as tmp:
        audio = excerpt(
            ROOT / args.input if not Path(args.input).is_absolute() else Path(args.input), args.seconds, Path(tmp)
        )
        for rep in range(args.repeats):
            for scenario in scenarios:
                for variant in variants:
                    print(
                        f"[{rep + 1}/{args.repeats}] {scenario:13s} {variant:13s}", end=" ", file=sys.stderr, flush=True
                    )
                    row = measure(audio, Path(tmp) / "out", scenario, variant, args.prior, args.preset, cpus)
                    print(f"RTF {row['real_time_factor']:.2f} (load before {row['load_before']})", file=sys.stderr)
                    rows.append(row)
    length = rows[0]["audio_seconds"]
    lines = [
        "## Beside other busy processes",
        "",
        f"Prior `{args.prior}`, `--preset {args.preset}`, input `{args.input}` "
        + (f"(its first {length:.1f} s)" if args.seconds else f"({length:.1f} s)")
        + f", {cpus} available CPUs ({os.cpu_count()} in the machine), "
        f"{platform.processor() or platform.machine()}. Real-time factor of the separation (start-up excluded), "
        f"median of {args.repeats} interleaved runs; in brackets the ratio to the same variant's idle row "
        "(target: at most 2.5 beside one busy process). Competitors: `torch`, a matrix-multiply loop at torch's "
        "default threads; `python`, a pure-Python busy loop. Variants: `auto` the default thread choice "
        "(`mgdm_audio/core/threads.py`), `auto-passive` the same with `OMP_WAIT_POLICY=PASSIVE`, `all-threads` "
        f"`--threads {cpus}` (the count before the thread settings), `one-thread` `--threads 1`.",
        "",
        f"Command: `python {' '.join(sys.argv)}` ({started})",
        "",
        *table(rows, variants, scenarios),
        "",
        "```json",
        json.dumps(rows, indent=1),
        "```",
    ]
    write_section(Path(args.out), [*lines, "", provenance_markdown(prov).strip("\n")])
    print("\n".join(lines[: len(lines) - 4]))


if __name__ == "__main__":
    main()
