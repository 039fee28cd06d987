"""Render speed per timbre source and statistics of the diverse dataset -> ``evaluation/results/data_diverse.md``.

    MGDM_AUDIO_NPM_CACHE=... python evaluation/data/bench_timbres.py --data /work/data/slakh-diverse [--songs 4]

Speed: every source renders the stems it can play of ``songs`` procedural 30-s songs (fixed seeds) in this process;
CPU seconds (``time.process_time``, meaningful on a shared machine) and wall seconds are reported per hour of
single-stem audio. Loading the soundfont or samples is excluded (one warm-up stem first).
Statistics of a rendered dataset (complete tracks only, from ``metadata.json``): tracks and hours per split, content
sources, timbre sources per stem, GM programs outside their Slakh class (must be 0), whole-track stem RMS
percentiles (5/50/95 %, dBFS) and, on every ``window_every``-th track, the number of active stems per 4-s window
(window RMS above -60 dBFS). The background render's throughput: complete train tracks per wall hour between the
first and the last ``metadata.json`` written.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import numpy as np

from mgdm_audio.audio.data.procedural import BASS_PROGRAMS, GUITAR_PROGRAMS, PIANO_PROGRAMS, STEM_NAMES, generate_song
from mgdm_audio.audio.data.timbres import TIMBRE_SOURCES, TimbreBank, draw_timbres
from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance

CLASS_PROGRAMS = {"bass": BASS_PROGRAMS, "guitar": GUITAR_PROGRAMS, "piano": PIANO_PROGRAMS}
WINDOW_S, ACTIVE_DBFS = 4.0, -60.0


def time_sources(songs: int, sample_rate: int = 22050) -> list[tuple[str, str, float, float, float]]:
    """``(source, stem, audio seconds, cpu seconds, wall seconds)`` per source and stem."""
    bank = TimbreBank(sample_rate, "fluidsynth")
    rows = []
    for name, source in TIMBRE_SOURCES.items():
        for stem in source.stems:
            timbres = {s: [name] if s == stem else ["randsynth"] for s in STEM_NAMES}
            warm = generate_song(999, 2.0)
            bank.render(warm.stems[stem], 2.0, draw_timbres(timbres, warm, 999)[stem], 0)
            cpu = wall = audio = 0.0
            for seed in range(songs):
                song = generate_song(7000 + seed, 30.0)
                choice = draw_timbres(timbres, song, seed)[stem]
                c0, w0 = time.process_time(), time.perf_counter()
                bank.render(song.stems[stem], song.seconds, choice, seed)
                cpu += time.process_time() - c0
                wall += time.perf_counter() - w0
                audio += song.seconds
            rows.append((name, stem, audio, cpu, wall))
    return rows


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    return "/".join(f"{v:.1f}" for v in np.percentile(values, [5, 50, 95]))


def split_stats(split: Path, window_every: int) -> dict:
    import soundfile

    metas = [json.loads(p.read_text()) for p in sorted(split.glob("Track*/metadata.json"))]
    content = collections.Counter(m.get("source", "?") for m in metas)
    timbres = {s: collections.Counter() for s in STEM_NAMES}
    out_of_class = 0
    for m in metas:
        for stem in STEM_NAMES:
            t = (m.get("timbres") or {}).get(stem)
            timbres[stem][t["source"] if t else Path(m["soundfont"]["path"]).stem] += 1
        out_of_class += sum(m["programs"][s] not in CLASS_PROGRAMS[s] for s in CLASS_PROGRAMS)
    active = collections.Counter()
    for p in sorted(split.glob("Track*/metadata.json"))[::window_every]:
        audio = np.stack([soundfile.read(p.parent / f"{s}.flac", dtype="float32")[0] for s in STEM_NAMES])
        n = int(WINDOW_S * metas[0]["sample_rate"])
        for start in range(0, audio.shape[1] - n + 1, n):
            rms = np.sqrt(np.mean(audio[:, start : start + n] ** 2, axis=1))
            active[int((20 * np.log10(rms + 1e-12) > ACTIVE_DBFS).sum())] += 1
    mtimes = sorted(p.stat().st_mtime for p in split.glob("Track*/metadata.json"))
    return {
        "tracks": len(metas),
        "hours": sum(m["seconds"] for m in metas) / 3600,
        "content": dict(content),
        "timbres": {s: dict(c) for s, c in timbres.items()},
        "out_of_class": out_of_class,
        "rms": {s: percentiles([m["rms_dbfs"][s] for m in metas]) for s in STEM_NAMES},
        "active": [active[k] for k in range(5)],
        "tracks_per_hour": (len(mtimes) - 1) / ((mtimes[-1] - mtimes[0]) / 3600) if len(mtimes) > 10 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/data/slakh-diverse")
    parser.add_argument("--songs", type=int, default=4)
    parser.add_argument("--window-every", type=int, default=10)
    parser.add_argument("--out", default="evaluation/results/data_diverse.md")
    args = parser.parse_args()
    prov = script_provenance(None, "cpu")  # no learnt network; git state before the long work
    lines = [
        "# Diverse Slakh-style data (issue 22): render speed per timbre source and dataset statistics",
        "",
        "Machine: 2 CPU cores shared with other jobs (load average above 8 while measured), one process, "
        "`OMP_NUM_THREADS=1`. Made by `evaluation/data/bench_timbres.py`.",
        "",
        f"## Render speed per source ({args.songs} procedural 30-s songs per stem, no file writing)",
        "",
        "CPU seconds per hour of one stem's audio (process time: what the render costs on a free core); wall "
        "seconds depend on the other jobs.",
        "",
        "| source | stem | audio | CPU s | **CPU s per hour of audio** | CPU real-time factor | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, stem, audio, cpu, wall in time_sources(args.songs):
        lines.append(
            f"| {name} | {stem} | {audio:.0f} s | {cpu:.2f} | **{3600 * cpu / audio:.0f}** | {audio / cpu:.0f}x | "
            f"{wall:.2f} |"
        )
    data = Path(args.data)
    lines += ["", f"## Dataset `{data}` (complete tracks when measured)", ""]
    lines += [
        "| split | tracks | hours | content | programs outside class | bass RMS | drums RMS | guitar RMS | "
        "piano RMS | 4-s windows with 0/1/2/3/4 active stems |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    stats = {}
    for split in sorted(p for p in data.iterdir() if p.is_dir()):
        s = stats[split.name] = split_stats(split, args.window_every)
        content = ", ".join(f"{k} {v}" for k, v in sorted(s["content"].items()))
        rms = " | ".join(s["rms"][stem] for stem in STEM_NAMES)
        lines.append(
            f"| {split.name} | {s['tracks']} | {s['hours']:.2f} | {content} | {s['out_of_class']} | {rms} | "
            f"{'/'.join(map(str, s['active']))} |"
        )
    lines += [
        "",
        "Timbre sources per stem (tracks):",
        "",
        "| split | bass | drums | guitar | piano |",
        "|---|---|---|---|---|",
    ]
    for name, s in stats.items():
        cells = [", ".join(f"{k} {v}" for k, v in sorted(s["timbres"][stem].items())) for stem in STEM_NAMES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    train = stats.get("train")
    if train and train["tracks_per_hour"]:
        rate = train["tracks_per_hour"]
        hours = train["hours"] / max(train["tracks"], 1) * rate
        lines += [
            "",
            f"Background render of `train` (one niced worker on the shared machine): {rate:.0f} complete tracks per "
            f"wall hour = {hours:.2f} h of 4-stem audio per wall hour.",
        ]
    Path(args.out).write_text("\n".join(lines) + "\n" + provenance_markdown(prov))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
