"""Stems at the input's channels and rate: SI-SDRi of the mapped stems against the separation at the prior's rate.

    nice -n 10 env OMP_NUM_THREADS=1 python evaluation/separation/stereo_mapping.py --split validation --tracks 4 \
        --per-channel --out evaluation/results/stereo_mapping_validation
    nice -n 10 env OMP_NUM_THREADS=1 python evaluation/separation/stereo_mapping.py --split test --tracks 10 \
        --exponents 1,2 --out evaluation/results/stereo_mapping_test

Mixes: the songs of the recipe's split (``recipes/data/slakh-style.yaml``: ``validation`` seeds 3000000+, ``test``
seeds 1000000+), each stem rendered at 44.1 kHz with FluidSynth and FluidR3_GM (the renderer of the dataset), cut to
``--seconds``, and panned with the constant-power law ``(cos t, sin t)``, ``t = pi / 4 (1 + u)``, ``u`` uniform in
[-0.8, 0.8] per stem (seeded by the track); the stereo mix is the sum, scaled to a 0.9 peak.

For each mix the separator (MGDM, preset ``fast``, prior ``slakh-style-small``) runs once with ``output="prior"``:
the mid's stems at 22.05 kHz. Those stems are scored against the mid's references resampled to 22.05 kHz (the
*prior-rate* score) and then mapped onto both channels at 44.1 kHz by the separator's own mapping
(:func:`mgdm_audio.audio.remix.map_to_input`, what ``output="input"`` runs; a test checks the two are identical),
and scored per channel against that channel's references at 44.1 kHz (the *input-rate* score). SI-SDRi: the
project's windowed protocol (4 s windows, hop 2 s, silent reference stems excluded), pooled over the (window, stem)
pairs of all tracks (and channels).

``--per-channel`` (validation only) also separates each channel on its own and maps each channel's stems onto it:
twice the sampler cost; it tells whether separating the mid loses what panning separates. ``--exponents`` compares
mask exponents. The mapping's cost is its own time per second of audio, beside the sampler's.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mgdm_audio.audio.data.procedural import STEM_NAMES
from mgdm_audio.audio.data.render import load_recipe, make_song
from mgdm_audio.audio.data.synth import make_renderer
from mgdm_audio.audio.io import resample_blocks
from mgdm_audio.audio.remix import ChannelMapper, map_to_input
from mgdm_audio.audio.separator import Separator
from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance, with_provenance
from mgdm_audio.metrics.sisdr import si_sdri_windows

RATE = 44100
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def render_mix(split: str, index: int, seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """References ``(C=2, S, T)`` and the stereo mix ``(2, T)`` at 44.1 kHz for track ``index`` of ``split``."""
    spec = next(s for s in load_recipe("recipes/data/slakh-style.yaml").splits if s.name == split)
    spec.seconds = seconds
    song = make_song(spec, index)
    renderer = make_renderer("fluidsynth", SOUNDFONT, RATE)
    n = int(seconds * RATE)
    stems = []
    for name in STEM_NAMES:
        x = np.zeros(n, dtype=np.float64)
        audio = renderer.render(song.stems[name], song.seconds)[:n]
        x[: audio.shape[0]] = audio
        stems.append(x)
    mono = torch.tensor(np.stack(stems))  # (S, T)
    u = np.random.default_rng(spec.seed + index).uniform(-0.8, 0.8, len(STEM_NAMES))
    theta = torch.tensor(np.pi / 4 * (1 + u))
    refs = torch.stack([torch.cos(theta)[:, None] * mono, torch.sin(theta)[:, None] * mono])  # (2, S, T)
    peak = float(refs.sum(1).abs().max())
    refs = refs * (0.9 / peak)
    return refs, refs.sum(1)


def resample(x: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    return torch.cat(list(resample_blocks([x.float()], sr_in, sr_out)), -1).double()


def pooled(results: list) -> float:
    """Mean SI-SDRi over every (window, stem) pair with an active reference stem."""
    values = [r.per_window[r.active] for r in results]
    return float(torch.cat(values).mean())


def mapped(
    stems: torch.Tensor, mix: torch.Tensor, prior_rate: int, exponent: float, rate: int = RATE
) -> tuple[torch.Tensor, float]:
    """Map prior-rate stems ``(S, T_p)`` onto ``mix (C, T)`` at ``rate``: ``(C, S, T)`` and the seconds spent."""
    mapper = ChannelMapper(stems.shape[0], mix.shape[0], rate, prior_rate, exponent)
    mapper.push_mix(mix.float())
    tic = time.perf_counter()
    blocks = [b for b, _ in map_to_input([stems[None].float()], mapper, prior_rate, rate, mix.shape[-1])]
    return torch.cat(blocks, -1)[0].permute(1, 0, 2).double(), time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--exponents", default="2", help="mask exponents to compare, e.g. 1,2")
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    exponents = [float(e) for e in args.exponents.split(",")]
    sep = Separator("slakh-style-small", sampler="mgdm", preset=args.preset, device="cpu", output="prior")
    prov = script_provenance(sep.prior.weights_sha256, "cpu")  # before the long work
    sr = sep.sample_rate
    rows, prior_scores, input_scores = [], [], {e: [] for e in exponents}
    channel_scores: list = []
    masked_scores: dict = {e: [] for e in exponents}
    for i in range(args.tracks):
        refs, mix = render_mix(args.split, i, args.seconds)
        sep.seed = i
        result = sep.separate_tensor(mix.float(), RATE)
        stems_p = result.stems[:, 0].double()  # (S, T_p): the mid's stems
        mid_refs = resample(refs.mean(0), RATE, sr)[:, : stems_p.shape[-1]]
        prior_scores.append(si_sdri_windows(stems_p, mid_refs, sr))
        row = {"track": i, "prior_rate": pooled(prior_scores[-1:]), "sampler_seconds": result.info["seconds"]}
        mid = mid_refs.sum(0, keepdim=True)
        for e in exponents:
            # the masks alone (a Wiener-style post-filter), without the change of rate and channels: the mid's stems
            # mapped back onto the mid at the prior's rate
            est_mid, _ = mapped(stems_p, mid, sr, e, rate=sr)
            masked_scores[e].append(si_sdri_windows(est_mid[0], mid_refs, sr))
            row[f"prior_rate_masked_p{e:g}"] = pooled(masked_scores[e][-1:])
            est, spent = mapped(stems_p, mix, sr, e)
            assert float((est.sum(1) - mix).abs().max()) <= 1e-4 * float(mix.abs().max())
            scores = [si_sdri_windows(est[c], refs[c], RATE) for c in range(2)]
            input_scores[e].extend(scores)
            row[f"input_rate_p{e:g}"] = pooled(scores)
            row["mapping_seconds"] = spent
        if args.per_channel:
            scores = []
            for c in range(2):
                sep.seed = i
                own = sep.separate_tensor(mix[c].float(), RATE).stems[:, 0].double()
                est, _ = mapped(own, mix[c : c + 1], sr, exponents[-1])
                scores.append(si_sdri_windows(est[0], refs[c], RATE))
            channel_scores.extend(scores)
            row["per_channel_input_rate"] = pooled(scores)
        rows.append(row)
        print(json.dumps(row), flush=True)
    audio = args.tracks * args.seconds
    summary = {
        "prior_rate": pooled(prior_scores),
        **{f"prior_rate_masked_p{e:g}": pooled(masked_scores[e]) for e in exponents},
        **{f"input_rate_p{e:g}": pooled(input_scores[e]) for e in exponents},
        "mapping_seconds_per_audio_second": sum(r["mapping_seconds"] for r in rows) / audio,
        "sampler_seconds_per_audio_second": sum(r["sampler_seconds"] for r in rows) / audio,
    }
    if args.per_channel:
        summary["per_channel_input_rate"] = pooled(channel_scores)
    meta = {
        "split": args.split,
        "tracks": args.tracks,
        "seconds": args.seconds,
        "preset": args.preset,
        "rate": RATE,
        "prior_rate": sr,
        "soundfont": SOUNDFONT.name,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread, shared 2-core CPU",
    }
    document = with_provenance({"meta": meta, "summary": summary, "rows": rows}, prov)
    Path(args.out + ".json").write_text(json.dumps(document, indent=1) + "\n")
    lines = [
        f"# Stems at the input's channels and rate ({args.split}, {args.tracks} stereo mixes of {args.seconds:g} s)",
        "",
        "Made by `evaluation/separation/stereo_mapping.py` (command in its docstring). SI-SDRi in dB, pooled over the "
        "(4 s window, active stem) pairs; MGDM `" + args.preset + "`, prior `slakh-style-small` (22.05 kHz mono mid).",
        "",
        "| track | prior rate (mid, 22.05 kHz) | "
        + " | ".join(
            f"masks p = {e:g} on the mid (22.05 kHz) | input rate, p = {e:g} (2 ch, 44.1 kHz)" for e in exponents
        )
        + (" | per-channel separation (2 ch, 44.1 kHz)" if args.per_channel else "")
        + " |",
        "|---|---|" + "---|---|" * len(exponents) + ("---|" if args.per_channel else ""),
    ]
    keys = ["prior_rate"] + [f"{k}_p{e:g}" for e in exponents for k in ("prior_rate_masked", "input_rate")]
    keys += ["per_channel_input_rate"] if args.per_channel else []
    for r in rows:
        lines.append(f"| {r['track']} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")
    lines.append("| pooled | " + " | ".join(f"**{summary[k]:.2f}**" for k in keys) + " |")
    lines += [
        "",
        f"Mapping cost: {summary['mapping_seconds_per_audio_second']:.3f} s per second of stereo 44.1 kHz audio "
        f"(the sampler: {summary['sampler_seconds_per_audio_second']:.2f} s), {meta['machine']}, {meta['date']}.",
        "",
    ]
    Path(args.out + ".md").write_text("\n".join(lines) + provenance_markdown(prov))
    print("\n".join(lines))
    assert math.isfinite(summary["prior_rate"])


if __name__ == "__main__":
    main()
