"""Separation speed and memory of each preset on this machine: `evaluation/results/separation_speed.md`.

    python evaluation/separation/speed.py --prior slakh-style-small --input examples/bach_bwv269/mix.flac \
        --runs mgdm:fast,msdm:fast,dps:fast --repeats 3 --out evaluation/results/separation_speed.md

For each (sampler, preset) it separates the input ``--repeats`` times (interleaved), each in a fresh subprocess (so
peak memory is that run's alone), and reports for the median-wall run: wall seconds, real-time factor (wall / audio
seconds), peak resident memory, NFE and VJP per second of audio, and the split of the sampler's time into network
calls (forward and backward through the denoiser, timed with hooks) and the rest (the sampler's own arithmetic, and
within it the Gaussian noise draws), as a fraction of wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[5]))
from mgdm_audio.core.runtime import keep_freed_memory
keep_freed_memory()  # as `mgdm-audio separate` does
from mgdm_audio.audio.separator import Separator
from mgdm_audio.audio.priors import load_prior

prior = load_prior(sys.argv[1])
net = {"forward": 0.0, "backward": 0.0, "calls": 0, "noise": 0.0}
_randn = torch.randn

def timed_randn(*args, **kwargs):
    # torch.randn, timed: the sampler's Gaussian noise draws (its code looks torch.randn up at every call)
    t0 = time.perf_counter()
    out = _randn(*args, **kwargs)
    net["noise"] += time.perf_counter() - t0
    return out

torch.randn = timed_randn

class TimedPrior:
    '''The prior with wall-clock timing of every forward call and of the backward pass through it.'''
    def __init__(self, inner):
        self.inner = inner
        for name in ("stems", "sample_rate", "chunk_samples", "config", "weights_sha256", "path", "downsampling"):
            setattr(self, name, getattr(inner, name))
        self.levels = inner.levels
    def to(self, device):
        self.inner.to(device)
        return self
    def __call__(self, x, sigma):
        t0 = time.perf_counter()
        out = self.inner(x, sigma)
        net["forward"] += time.perf_counter() - t0
        net["calls"] += 1
        if out.requires_grad and x.requires_grad:
            mark = {}
            out.register_hook(lambda g: mark.__setitem__("t", time.perf_counter()) or g)
            def done(g):
                net["backward"] += time.perf_counter() - mark.get("t", time.perf_counter())
                return g
            x.register_hook(done)
        return out

sep = Separator(TimedPrior(prior), sampler=sys.argv[3], preset=sys.argv[4], seed=0)
t0 = time.perf_counter()
result = sep.separate_file(sys.argv[2])
wall = time.perf_counter() - t0
info = result.info
print(json.dumps({
    "wall": wall, "audio_seconds": info["audio_seconds"], "nfe": info["nfe"], "vjp": info["vjp"],
    "sampler_seconds": info["sampler_seconds"], "forward_seconds": net["forward"],
    "backward_seconds": net["backward"], "noise_seconds": net["noise"], "chunks": info["chunks"],
    "chunk_samples": info["chunk_samples"],
    "sampler_preset": info["sampler_preset"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def measure(prior: str, audio: Path, sampler: str, preset: str, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, prior, str(audio), sampler, preset, str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="slakh-style-small")
    p.add_argument("--input", default="examples/bach_bwv269/mix.flac")
    p.add_argument("--runs", default="mgdm:fast,mgdm:default,msdm:fast", help="sampler:preset list")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="evaluation/results/separation_speed.md")
    p.add_argument("--repeats", type=int, default=3, help="runs per row, interleaved; the median-wall run is shown")
    args = p.parse_args()
    items = [tuple(item.split(":")) for item in args.runs.split(",")]
    runs: dict[tuple[str, ...], list[dict]] = {item: [] for item in items}
    for rep in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every row alike
        for sampler, preset in items:
            print(f"measuring {sampler}:{preset} ({rep + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
            r = measure(args.prior, Path(args.input), sampler, preset, args.threads)
            r.update(sampler=sampler, preset=preset)
            runs[(sampler, preset)].append(r)
    rows = []
    for item in items:
        ordered = sorted(runs[item], key=lambda r: r["wall"])
        median = dict(ordered[len(ordered) // 2])
        median["all_walls"] = [round(r["wall"], 2) for r in runs[item]]
        rows.append(median)
    load = os.getloadavg()
    lines = [
        "# Separation speed and memory",
        "",
        f"Prior `{args.prior}`, input `{args.input}` ({rows[0]['audio_seconds']:.1f} s), {args.threads} torch threads, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average before the last run "
        f"{load[0]:.2f}. Each row is the median-wall run of {args.repeats} (interleaved across rows, each in a fresh "
        "process; peak memory = that process's maximum RSS, which includes ~0.5 GB of imported libraries); the "
        "wall column also gives the fastest and slowest run: this shared machine's speed drifts by 10-20 % "
        "from one minute to the next.",
        "",
        f"Command: `python {' '.join(sys.argv)}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        "| sampler | preset (sampler preset) | wall s (min-max) | real-time factor | peak RSS MB | NFE / audio s "
        "| VJP / audio s | network fwd % | network bwd % | sampler rest % | of which noise draws % | engine rest % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall, secs = r["wall"], r["audio_seconds"]
        net = r["forward_seconds"] + r["backward_seconds"]
        lines.append(
            f"| {r['sampler']} | {r['preset']} ({r['sampler_preset']}) "
            f"| {wall:.1f} ({min(r['all_walls']):.1f}-{max(r['all_walls']):.1f}) | {wall / secs:.2f} "
            f"| {r['peak_rss_mb']:.0f} | {r['nfe'] / secs:.1f} | {r['vjp'] / secs:.1f} "
            f"| {100 * r['forward_seconds'] / wall:.1f} | {100 * r['backward_seconds'] / wall:.1f} "
            f"| {100 * (r['sampler_seconds'] - net) / wall:.1f} | {100 * r['noise_seconds'] / wall:.1f} "
            f"| {100 * (wall - r['sampler_seconds']) / wall:.1f} |"
        )
    lines += [
        "",
        "NFE and VJP count network evaluations per chunk summed over chunks (a batch of chunks counts once per chunk).",
        "`sampler rest` is the sampler's time outside the network (its own arithmetic: Adam steps, bridges, and "
        "the Gaussian noise its steps draw, also shown alone as `noise draws`: torch's CPU generator is sequential, "
        "about 0.6 ms per 2 x 4 x 32768 draw); "
        "`engine rest` is everything outside the sampler (reading, resampling, stitching, writing). "
        "Targets (issue 5): `fast` real-time factor at most 2; sampler time beyond network calls at most 5 % of wall.",
        "",
        "```json",
        json.dumps(rows, indent=1),
        "```",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, args.out)
    print("\n".join(lines[: 13 + len(rows)]))


if __name__ == "__main__":
    main()
