"""Render-speed benchmark and dataset statistics of the Slakh-style data -> ``evaluation/results/data.md``.

    python evaluation/data/bench_render.py --data /work/data/slakh-style [--minutes 10] [--out PATH.md]

Speed: renders ``minutes`` of 30-s procedural tracks (4 stems + mix, FLAC written) with one worker per available
renderer and scales the wall time to one hour of 4-stem audio (seconds per hour = wall / audio_hours).
Statistics of a rendered dataset: hours per split, per-stem RMS percentiles (5/50/95, dBFS, whole tracks) and the
distribution of the number of active stems per non-overlapping 4-s window (a stem is active when its window RMS is
above -60 dBFS).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mgdm_audio.audio.data import synth
from mgdm_audio.audio.data.procedural import STEM_NAMES
from mgdm_audio.audio.data.render import SplitSpec, render_split
from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance

WINDOW_S = 4.0
ACTIVE_DBFS = -60.0


def time_render(renderer: str, soundfont: Path, minutes: float) -> tuple[float, float]:
    """(wall seconds, audio hours) for ``minutes`` of 30-s tracks rendered with one worker."""
    tracks = max(1, int(round(minutes * 2)))
    with tempfile.TemporaryDirectory() as root:
        spec = SplitSpec(
            name="bench", tracks=tracks, seconds=30.0, seed=123, soundfont=str(soundfont), renderer=renderer
        )
        start = time.perf_counter()
        summary = render_split(root, spec, workers=1, progress=False)
        wall = time.perf_counter() - start
    return wall, summary.audio_seconds / 3600


def split_statistics(split_dir: Path) -> dict:
    """Hours, per-stem RMS (dBFS) percentiles and active-stem counts per 4-s window of one rendered split."""
    import soundfile

    seconds, rms = 0.0, {s: [] for s in STEM_NAMES}
    active_counts = np.zeros(len(STEM_NAMES) + 1, dtype=int)
    for track in sorted(p for p in split_dir.iterdir() if (p / "metadata.json").is_file()):
        meta = json.loads((track / "metadata.json").read_text())
        seconds += float(meta["seconds"])
        rate = int(meta["sample_rate"])
        window = int(WINDOW_S * rate)
        active = None
        for stem in STEM_NAMES:
            audio, _ = soundfile.read(track / f"{stem}.flac", dtype="float32")
            rms[stem].append(20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-12))
            n = audio.size // window
            if n == 0:
                continue
            frames = audio[: n * window].reshape(n, window).astype(np.float64)
            on = 20 * np.log10(np.sqrt((frames**2).mean(1)) + 1e-12) > ACTIVE_DBFS
            active = on.astype(int) if active is None else active + on
        if active is not None:
            active_counts += np.bincount(active, minlength=len(STEM_NAMES) + 1)
    return {
        "tracks": len(rms[STEM_NAMES[0]]),
        "hours": seconds / 3600,
        "rms_percentiles": {s: np.percentile(v, [5, 50, 95]).tolist() for s, v in rms.items() if v},
        "active_counts": active_counts.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a rendered dataset root (OUT of make-dataset)")
    parser.add_argument("--minutes", type=float, default=10.0, help="audio minutes to render per renderer")
    parser.add_argument("--out", type=Path, default=Path("evaluation/results/data.md"))
    args = parser.parse_args()
    prov = script_provenance(None, "cpu")  # no learnt network; git state before the long work

    lines = ["# Slakh-style data: render speed and dataset statistics", ""]
    lines += [f"Machine: {os.cpu_count()} CPU cores (shared with other jobs while measured), one render worker.", ""]
    lines += ["## Seconds to render 1 hour of 4-stem audio", ""]
    lines += [
        f"Measured on {args.minutes:g} min of 30-s procedural tracks (4 stems + mix, FLAC written), scaled to 1 h.",
        "",
    ]
    lines += [
        "| renderer | soundfont | audio rendered | wall | **s per hour of audio** | real-time factor |",
        "|---|---|---|---|---|---|",
    ]
    routes = [("fluidsynth", synth.FLUID_R3_GM), ("tinysoundfont", synth.FLUID_R3_GM)]  # TimGM6mb is reserved
    for renderer, soundfont in routes:
        if soundfont is None or not soundfont.is_file() or not synth.renderer_available(renderer):
            lines.append(f"| {renderer} | {soundfont} | not available | | | |")
            continue
        wall, hours = time_render(renderer, soundfont, args.minutes)
        lines.append(
            f"| {renderer} | {soundfont.name} | {hours * 60:.1f} min | {wall:.1f} s | **{wall / hours:.0f}** | "
            f"{hours * 3600 / wall:.0f}x |"
        )
    if args.data is not None:
        lines += ["", f"## Dataset statistics of `{args.data}`", ""]
        lines += [
            f"Active stem: 4-s window RMS above {ACTIVE_DBFS:g} dBFS; RMS over whole tracks (5/50/95 %, dBFS).",
            "",
        ]
        header = "| split | tracks | hours | " + " | ".join(f"{s} RMS" for s in STEM_NAMES)
        header += " | windows with 0/1/2/3/4 active stems |"
        lines += [header, "|---" * (3 + len(STEM_NAMES) + 1) + "|"]
        for split_dir in sorted(p for p in args.data.iterdir() if p.is_dir()):
            stats = split_statistics(split_dir)
            rms = " | ".join("/".join(f"{v:.1f}" for v in stats["rms_percentiles"].get(s, [])) for s in STEM_NAMES)
            counts = "/".join(str(c) for c in stats["active_counts"])
            lines.append(f"| {split_dir.name} | {stats['tracks']} | {stats['hours']:.3f} | {rms} | {counts} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n" + provenance_markdown(prov))
    os.replace(tmp, args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
