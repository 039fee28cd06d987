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
import json, resource, sys, threading, time
import torch
torch.set_num_threads(int(sys.argv[5]))
from mgdm_audio.core.runtime import keep_freed_memory
keep_freed_memory()  # as `mgdm-audio separate` does
from mgdm_audio.audio.separator import Separator
from mgdm_audio.audio.priors import load_prior

prior = load_prior(sys.argv[1])
net = {"forward": 0.0, "backward": 0.0, "calls": 0, "noise": 0.0, "noise_background": 0.0}
_randn = torch.randn

def timed_randn(*args, **kwargs):
    # torch.randn, timed: the sampler's Gaussian noise draws (its code looks torch.randn up at every call); draws made
    # ahead of time on the prefetch thread (mgdm_audio.core.rng) are counted apart: they are off the sampler's path
    t0 = time.perf_counter()
    out = _randn(*args, **kwargs)
    key = "noise" if threading.current_thread() is threading.main_thread() else "noise_background"
    net[key] += time.perf_counter() - t0
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
    "backward_seconds": net["backward"], "noise_seconds": net["noise"],
    "noise_background_seconds": net["noise_background"], "chunks": info["chunks"],
    "chunk_samples": info["chunk_samples"],
    "sampler_preset": info["sampler_preset"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def measure(prior: str, audio: Path, sampler: str, preset: str, threads: int, prefetch: bool = True) -> dict:
    env = {**os.environ, "MGDM_AUDIO_NOISE_PREFETCH": "1" if prefetch else "0"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, prior, str(audio), sampler, preset, str(threads)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="slakh-style-small")
    p.add_argument("--input", default="examples/bach_bwv269/mix.flac")
    p.add_argument(
        "--runs",
        default="mgdm:fast,mgdm:fast:serial,msdm:fast",
        help="sampler:preset list; sampler:preset:serial draws the noise serially (MGDM_AUDIO_NOISE_PREFETCH=0)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="evaluation/results/separation_speed.md")
    p.add_argument("--repeats", type=int, default=3, help="runs per row, interleaved; the median-wall run is shown")
    args = p.parse_args()
    from mgdm_audio.audio.priors import prior_weights_sha256
    from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance

    prov = script_provenance(prior_weights_sha256(args.prior), "cpu")  # before the runs (other processes)
    items = [tuple(item.split(":")) for item in args.runs.split(",")]
    runs: dict[tuple[str, ...], list[dict]] = {item: [] for item in items}
    for rep in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every row alike
        for item in items:
            sampler, preset, serial = item[0], item[1], item[2:] == ("serial",)
            print(f"measuring {':'.join(item)} ({rep + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
            r = measure(args.prior, Path(args.input), sampler, preset, args.threads, prefetch=not serial)
            r.update(sampler=sampler, preset=preset, noise_prefetch=not serial)
            runs[item].append(r)
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
        "| VJP / audio s | network fwd % | network bwd % | sampler rest % | of which noise draws % | engine rest % "
        "| noise drawn ahead s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall, secs = r["wall"], r["audio_seconds"]
        net = r["forward_seconds"] + r["backward_seconds"]
        serial = "" if r["noise_prefetch"] else ", serial noise"
        lines.append(
            f"| {r['sampler']} | {r['preset']} ({r['sampler_preset']}{serial}) "
            f"| {wall:.1f} ({min(r['all_walls']):.1f}-{max(r['all_walls']):.1f}) | {wall / secs:.2f} "
            f"| {r['peak_rss_mb']:.0f} | {r['nfe'] / secs:.1f} | {r['vjp'] / secs:.1f} "
            f"| {100 * r['forward_seconds'] / wall:.1f} | {100 * r['backward_seconds'] / wall:.1f} "
            f"| {100 * (r['sampler_seconds'] - net) / wall:.1f} | {100 * r['noise_seconds'] / wall:.1f} "
            f"| {100 * (wall - r['sampler_seconds']) / wall:.1f} | {r['noise_background_seconds']:.2f} |"
        )
    lines += [
        "",
        "NFE and VJP count network evaluations per chunk summed over chunks (a batch of chunks counts once per chunk).",
        "`sampler rest` is the sampler's time outside the network (its own arithmetic: Adam steps, bridges, and "
        "the Gaussian noise its steps draw on the sampler's thread, also shown alone as `noise draws`: torch's CPU "
        "generator is sequential, 2-3 ms per 4 x 4 x 32768 draw); `noise drawn ahead` is the time of the draws made "
        "on the prefetch thread beside the network calls (`mgdm_audio/core/rng.py`: the same numbers, bit for bit, "
        "as serial draws); `serial noise` rows turn the prefetch off (`MGDM_AUDIO_NOISE_PREFETCH=0`). "
        "`engine rest` is everything outside the sampler (reading, resampling, stitching, writing). "
        "Targets (issue 5): `fast` real-time factor at most 2; sampler time beyond network calls at most 5 % of wall.",
        "",
        "```json",
        json.dumps(rows, indent=1),
        "```",
        "",
        provenance_markdown(prov).strip("\n"),
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    old = Path(args.out).read_text() if Path(args.out).exists() else ""
    if "<!-- contention:start -->" in old:  # the rows of contention.py stay
        lines += ["<!-- contention:start -->" + old.split("<!-- contention:start -->", 1)[1]]
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, args.out)
    print("\n".join(lines[: 13 + len(rows)]))


if __name__ == "__main__":
    main()
