"""The samplers against an exact posterior on real mixtures: the stationary Gaussian stem prior.

The trained prior is replaced by :func:`mgdm_audio.audio.gaussian_prior.gaussian_stem_prior` (independent stationary
Gaussian stems with the Welch spectra of ``ROOT/train``, the benchmark's ``wiener`` spectra, circular over each
chunk). Its posterior given the mix is Gaussian and known: mean = the Wiener separation, exact draws by Matheron's
rule (all filters circular, so all exact for this prior). Each sampler separates
the same single prior-length chunks (no streaming, no overlap) the way the separator calls it (the ``SumOfStems``
operator, ``sigma_y`` of the separator, the VP start, the mix scaled to the prior's ``mix_rms``; no final projection
onto the mix), and is scored two ways:

* SI-SDRi per stem over the whole chunk (mean over chunks), beside the exact posterior mean and one exact sample;
* its distance to the exact posterior mean, relative to an exact sample's: ``||x - m||^2 / E||x* - m||^2``
  (1 for a calibrated sampler, below 1 when it collapses towards the mean, above 1 when it is over-dispersed or
  biased; the exact sample's row is 1 by construction, one draw per chunk being the yardstick).

    python evaluation/separation/gaussian_testbed.py --root data/slakh-style --split validation \\
        --chunks 8 --runs mgdm:audio-fast,mgdm:audio-fast:lr_default=1.0,mgdm:audio,mgdm:fast,mgdm:paper-audio,\\
        msdm:fast,msdm:paper-audio,dps:fast \\
        --markdown evaluation/separation/gaussian_testbed.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from mgdm_audio.audio.gaussian_prior import gaussian_stem_prior
from mgdm_audio.audio.priors import load_prior
from mgdm_audio.audio.separation import SumOfStems
from mgdm_audio.audio.separator import SIGMA_Y
from mgdm_audio.audio.spectra import wiener_posterior_sample, wiener_separation
from mgdm_audio.benchmarks import separation as sb
from mgdm_audio.benchmarks.harness import git_state, provenance_markdown, script_provenance, with_provenance
from mgdm_audio.core.atomic import write_atomic
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.metrics.sisdr import si_snr
from mgdm_audio.samplers.run import parse_run_specs, resolve, run_posterior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--prior", default="slakh-style-small", help="whose stems, rate, chunk and levels to copy")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--runs", default="mgdm:audio-fast,msdm:fast", help="sampler:preset[:key=value...], comma-separated"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    code = git_state()  # the code the numbers come from: the checkout may change while the run goes on

    like = load_prior(args.prior)
    psd = sb.fit_wiener_psd(args.root, "slakh", like, like.chunk_samples, args.seed)
    prior = gaussian_stem_prior(psd, like)
    dataset = sb.open_dataset(args.root, "slakh", args.split, like.stems, like.sample_rate, like.chunk_samples)
    chunks = sb.select_chunks(dataset, args.chunks, args.seed)
    x = torch.stack([torch.as_tensor(dataset[c.position], dtype=torch.float32) for c in chunks])
    mix = x.sum(1, keepdim=True)
    gain = float(like.config["metadata"]["mix_rms"]) / mix.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    x, mix = x * gain, mix * gain
    baseline = si_snr(mix.expand_as(x), x)
    generator = torch.Generator().manual_seed(args.seed)
    # pad = 0: the circular model of gaussian_stem_prior, for which mean and samples are exact
    mean = torch.stack([wiener_separation(m[0], psd, pad=0) for m in mix]).float()
    exact = torch.stack([wiener_posterior_sample(m[0], psd, generator, pad=0) for m in mix]).float()
    spread = (exact - mean).pow(2).sum(dim=(1, 2))  # one exact draw per chunk: the yardstick
    rows = {
        "exact posterior mean": {"estimate": mean, "nfe": 0, "seconds": 0.0},
        "exact posterior sample": {"estimate": exact, "nfe": 0, "seconds": 0.0},
    }
    problem = InverseProblem(SumOfStems(x.shape[1], x.shape[-1]), mix, SIGMA_Y)
    for spec in parse_run_specs(args.runs, flag="--runs"):  # sampler presets by their own names, audio's start
        run = spec.name
        posterior = resolve(dataclasses.replace(spec, overrides=(("start_scale", "vp"), *spec.overrides)), "plain")
        posterior.check(problem)
        g = torch.Generator().manual_seed(args.seed + 1)
        start = time.perf_counter()
        out = run_posterior(prior, problem, posterior, x.shape[0], g, x_shape=x.shape[1:])
        rows[run] = {"estimate": out.samples.float(), "nfe": out.nfe, "seconds": time.perf_counter() - start}
        print(f"{run}: {rows[run]['seconds']:.1f} s, {out.nfe} NFE", flush=True)

    stems = list(like.stems)
    table = {}
    for label, row in rows.items():
        gain_db = (si_snr(row["estimate"], x) - baseline).mean(0)
        distance = (row["estimate"] - mean).pow(2).sum(dim=(1, 2)) / spread
        table[label] = {
            "si_sdri": dict(zip(stems, gain_db.tolist(), strict=True)),
            "si_sdri_average": float(gain_db.mean()),
            "distance_to_mean": float(distance.median()),
            "nfe": row["nfe"],
            "seconds": row["seconds"],
        }
    info = {
        "root": str(args.root),
        "split": args.split,
        "chunks": [c.chunk_id for c in chunks],
        "chunk_samples": like.chunk_samples,
        "psd_sha256": prior.weights_sha256,
        "sigma_y": SIGMA_Y,
        "seed": args.seed,
        "threads": args.threads,
    }
    lines = [
        f"Gaussian stem prior (train-split spectra, sha256 `{prior.weights_sha256[:12]}`) on {len(chunks)} "
        f"`{args.split}` chunks of {like.chunk_samples / like.sample_rate:.2f} s; SI-SDRi over the whole chunk "
        "(dB, mean over chunks); distance to the exact posterior mean relative to an exact sample's (median over "
        "chunks; 1 = calibrated, and 1 by construction for the exact sample, which is the yardstick). NFE per chunk "
        "batch, seconds on this machine.",
        "",
        "| run | " + " | ".join(stems) + " | average | distance to mean | NFE | seconds |",
        "|---|" + "---|" * (len(stems) + 4),
    ]
    for label, t in table.items():
        cells = " | ".join(f"{t['si_sdri'][s]:.2f}" for s in stems)
        lines.append(
            f"| {label} | {cells} | {t['si_sdri_average']:.2f} | {t['distance_to_mean']:.2f} | {t['nfe']} | "
            f"{t['seconds']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    prov = script_provenance(prior.weights_sha256, "cpu", git=code)  # the Gaussian prior's PSD hash
    if args.markdown:
        write_atomic(args.markdown, text + provenance_markdown(prov))
    if args.json:
        write_atomic(args.json, json.dumps(with_provenance({"info": info, "rows": table}, prov), indent=1))


if __name__ == "__main__":
    main()
