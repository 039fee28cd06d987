r"""Where does a prior's generation fail? ``evaluation/results/prior_diagnosis.md`` (+ ``.json``).

    python evaluation/prior/diagnose.py --prior slakh-style-small [--prior runs/x/export ...] \
        --data-root /work/data/slakh-style --out evaluation/results/prior_diagnosis.md

Unconditional generation starts at the top of the prior's noise range and passes through every level; a stem that
comes out wrong (issue 4's classifier reads it as another stem) went wrong *somewhere* on the way. Two measurements
on the ``validation`` split (not the report's ``test`` split) locate it:

1. **Re-noise and denoise back.** ``--chunks`` validation chunks in which every stem is active are noised to
   ``x = x_0 + \sigma_{start} n`` and integrated back to 0 with the probability-flow ODE (Euler,
   ``dx/d\sigma = (x - D(x, \sigma)) / \sigma`` on a Karras grid of ``--steps`` points from ``\sigma_{start}`` to the
   prior's smallest level, then one step to 0); the result is classified by the report's stem classifier
   (``mgdm_audio.metrics.stem_classifier``). A prior that recognisably restores the stems from ``\sigma_{start}`` is
   sound *below* that level; the level where the recognition collapses is where the prior stops knowing what the
   stems are.
2. **Denoising loss in 1-unit ln-sigma bins** (the trainer's validator with finer band edges; EDM weight
   ``\lambda(\sigma) = (\sigma^2 + \sigma_d^2)/(\sigma\sigma_d)^2``) beside the untrained skip path ``D = c_skip x``
   (``mgdm_audio.audio.baselines``; the ratio is what the network adds) and, with ``--train-sigma MEAN,STD``, the
   fraction of training draws ``ln \sigma \sim N(MEAN, STD)`` that falls in each bin.
3. **Noise floor or structure?** ``--samples`` unconditional samples (``generate``, seed ``--seed``) classified as
   they are and after a per-stem Wiener post-filter ``W_\sigma`` (``mgdm_audio.audio.baselines.WienerDenoiser``, PSD
   of the classifier's train chunks) at each ``--post-sigmas`` level. A stem that is recognised once the filter has
   removed a residual noise floor failed on its noise; one that is not failed on its content.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.audio.baselines import SkipPathDenoiser, WienerDenoiser
from mgdm_audio.audio.data.readers import seeded_slakh_chunks
from mgdm_audio.benchmarks.harness import git_state, provenance_markdown, script_provenance, with_provenance
from mgdm_audio.core.atomic import write_atomic
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.schedules import karras_sigmas
from mgdm_audio.metrics.stem_classifier import SILENCE_DB, fit_stem_classifier, rms_db, stem_accuracy

BIN_EDGES = (-8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)


def probability_flow_from(prior: Any, x: Tensor, sigma_start: float, steps: int, rho: float = 7.0) -> Tensor:
    r"""Euler on :math:`dx/d\sigma = (x - D(x, \sigma))/\sigma` from ``sigma_start`` to the prior's smallest level
    (``steps`` Karras points), then ``D`` at that level (the step to 0)."""
    sigmas = karras_sigmas(steps, prior.levels.sigma_min, sigma_start, rho).tolist() + [0.0]
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            x = x + (x - prior(x, sigma)) / sigma * (sigma_next - sigma)
    return x


def lognormal_bin_mass(mean: float, std: float, edges: tuple[float, ...]) -> list[float]:
    """``P(lo <= ln sigma < hi)`` for ``ln sigma ~ N(mean, std)`` and consecutive edges."""
    cdf = [0.5 * (1 + math.erf((e - mean) / (std * math.sqrt(2)))) for e in edges]
    return [hi - lo for lo, hi in zip(cdf[:-1], cdf[1:], strict=True)]


def diagnose(prior_ref: str, args: argparse.Namespace) -> dict[str, Any]:
    from mgdm_audio.audio.priors import generate, load_prior
    from mgdm_audio.training.trainer import ValidationSettings, Validator

    prior = load_prior(prior_ref)
    stems = list(prior.stems)
    train = seeded_slakh_chunks(
        args.data_root, "train", prior.stems, prior.sample_rate, prior.chunk_samples, args.train_chunks, args.seed
    )
    classifier, _ = fit_stem_classifier(train, prior.sample_rate, SILENCE_DB)
    pool = seeded_slakh_chunks(
        args.data_root, "validation", prior.stems, prior.sample_rate, prior.chunk_samples, args.pool, args.seed
    )
    full = pool[(rms_db(pool) > SILENCE_DB).all(dim=1)][: args.chunks]
    if full.shape[0] == 0:
        raise UserInputError("no validation chunk has every stem active; raise --pool.")
    generator = torch.Generator().manual_seed(args.seed)
    renoise = []
    for sigma in args.sigmas:
        noisy = full + sigma * torch.randn(full.shape, generator=generator)
        restored = probability_flow_from(prior, noisy, sigma, args.steps)
        acc = stem_accuracy(classifier, restored, stems, prior.sample_rate, SILENCE_DB, True)
        renoise.append({"sigma_start": sigma, **acc})
        print(f"  {prior_ref}: sigma {sigma:g}: {acc['correct']}/{acc['scored']}", flush=True)
    generated = generate(prior, args.samples, prior.chunk_samples / prior.sample_rate, args.seed)
    wiener = WienerDenoiser(prior.module, train)
    post = []
    for sigma in [0.0, *args.post_sigmas]:
        filtered = generated if sigma == 0 else wiener(generated, torch.full((generated.shape[0],), sigma))
        post.append(
            {"post_sigma": sigma, **stem_accuracy(classifier, filtered, stems, prior.sample_rate, SILENCE_DB, True)}
        )
    settings = ValidationSettings(items=pool.shape[0], batch_size=8, band_edges=BIN_EDGES, seed=args.seed)
    validator = Validator(pool, settings, torch.device("cpu"))  # type: ignore[arg-type]
    bins = {"prior": validator(prior.module), "skip path": validator(SkipPathDenoiser(prior.module))}
    return {
        "prior": prior_ref,
        "weights_sha256": prior.weights_sha256,
        "training_steps": prior.config.get("training_steps"),
        "stems": stems,
        "renoise_chunks": int(full.shape[0]),
        "renoise": renoise,
        "post_filter": post,
        "bins": bins,
    }


def _recognised(acc: dict[str, Any]) -> str:
    """``correct/scored (b n, d n, ...)`` of one :func:`stem_accuracy` result (stems by their initial)."""
    per = ", ".join(f"{name[0]} {v['correct']}" for name, v in acc["per_stem"].items())
    return f"{acc['correct']}/{acc['scored']} ({per})"


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Where does generation fail? (prior diagnosis, `validation` split)",
        "",
        f"Produced by `{r['command']}` on {r['date']}. Method: `evaluation/prior/diagnose.py` (docstring).",
        "",
        "## Re-noise to sigma_start, denoise back (probability-flow ODE), classify",
        "",
        f"Validation chunks with every stem active, {r['steps']} Euler steps; the report's classifier, fitted to "
        f"`train` chunks drawn with seed {r['seed']} (the report's headline uses seed 0; its spread over other draws "
        "is in the report). Recognised stems of all scored stems:",
        "",
    ]
    sigmas = r["sigmas"]
    lines.append("| prior (weights sha256) | steps | " + " | ".join(f"sigma_start {s:g}" for s in sigmas) + " |")
    lines.append("|---|---|" + "---|" * len(sigmas))
    for p in r["priors"]:
        cells = " | ".join(_recognised(row) for row in p["renoise"])
        lines.append(f"| `{p['prior']}` (`{p['weights_sha256'][:8]}`) | {p['training_steps']} | {cells} |")
    lines += [
        "",
        "(per stem: b = bass, d = drums, g = guitar, p = piano.)",
        "",
        "## Generated samples, as they are and after a Wiener post-filter",
        "",
        f"{r['samples']} samples of `generate(prior, {r['samples']}, chunk, seed={r['seed']})`; recognised stems:",
        "",
    ]
    levels = [row["post_sigma"] for row in r["priors"][0]["post_filter"]]
    lines.append("| prior | " + " | ".join("as generated" if s == 0 else f"W at sigma {s:g}" for s in levels) + " |")
    lines.append("|---|" + "---|" * len(levels))
    for p in r["priors"]:
        cells = " | ".join(_recognised(row) for row in p["post_filter"])
        lines.append(f"| `{p['prior']}` (`{p['weights_sha256'][:8]}`) | {cells} |")
    lines += [
        "",
        "## Denoising loss in 1-unit ln-sigma bins (validation chunks)",
        "",
        "EDM-weighted loss of the prior / of the untrained skip path (lower is better; the ratio is what the network "
        "adds: 1.0 = nothing)" + (", and the share of training draws per bin" if r["train_sigma"] else "") + ".",
        "",
    ]
    names = list(r["priors"][0]["bins"]["prior"].keys())
    names = [n for n in names if n != "mean_over_bands"]
    lines.append(
        "| ln sigma bin | "
        + " | ".join(f"`{p['prior']}`" for p in r["priors"])
        + " | skip path |"
        + (" training draws |" if r["train_sigma"] else "")
    )
    lines.append("|---|" + "---|" * (len(r["priors"]) + 1 + (1 if r["train_sigma"] else 0)))
    for k, name in enumerate(names):
        skip = r["priors"][0]["bins"]["skip path"][name]
        cells = [f"{p['bins']['prior'][name]:.3f} ({p['bins']['prior'][name] / skip:.2f})" for p in r["priors"]]
        mass = f" {r['train_sigma']['mass'][k] * 100:.1f} % |" if r["train_sigma"] else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {skip:.3f} |" + mass)
    if r["train_sigma"]:
        lines += ["", f"Training draws: ln sigma ~ N({r['train_sigma']['mean']}, {r['train_sigma']['std']})."]
    lines += ["", f"Raw numbers: `{r['json']}`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", action="append", required=True, help="prior name or export folder (repeatable)")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", default="evaluation/results/prior_diagnosis.md")
    parser.add_argument("--sigmas", default="0.05,0.2,1,5", help="comma-separated sigma_start values")
    parser.add_argument("--steps", type=int, default=40, help="Euler steps of the way back")
    parser.add_argument("--chunks", type=int, default=12, help="validation chunks (every stem active) to re-noise")
    parser.add_argument("--pool", type=int, default=64, help="validation chunks drawn (loss bins; re-noise subset)")
    parser.add_argument("--train-chunks", type=int, default=256, help="train chunks for the classifier")
    parser.add_argument("--train-sigma", default=None, help="MEAN,STD of the training ln sigma (for the bin shares)")
    parser.add_argument("--samples", type=int, default=16, help="unconditional samples for the post-filter test")
    parser.add_argument("--post-sigmas", default="0.003,0.01", help="Wiener post-filter levels (comma-separated)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    train_sigma = None
    try:
        args.sigmas = [float(s) for s in args.sigmas.split(",")]
        args.post_sigmas = [float(s) for s in args.post_sigmas.split(",")]
        if min(args.post_sigmas) <= 0 or args.samples < 1:
            raise ValueError
        if not args.sigmas or min(args.sigmas) <= 0 or args.steps < 2 or args.chunks < 1:
            raise ValueError
        if args.train_sigma:
            mean, std = (float(v) for v in args.train_sigma.split(","))
            if not std > 0:
                raise ValueError
            train_sigma = {"mean": mean, "std": std, "mass": lognormal_bin_mass(mean, std, BIN_EDGES)}
    except ValueError:
        print(
            "error: --sigmas and --post-sigmas must be positive numbers, --train-sigma MEAN,STD with STD > 0, "
            "--steps >= 2, --chunks and --samples >= 1.",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    code = git_state()  # the code the numbers come from: the checkout may change while the run goes on
    try:
        priors = [diagnose(p, args) for p in args.prior]
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    script = ["evaluation/prior/diagnose.py", *(sys.argv[1:] if argv is None else argv)]
    prov = script_provenance(", ".join(p["weights_sha256"] for p in priors), "cpu", script, code)
    results = {
        "command": prov["command"],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sigmas": args.sigmas,
        "samples": args.samples,
        "steps": args.steps,
        "seed": args.seed,
        "train_sigma": train_sigma,
        "json": out.with_suffix(".json").name,
        "priors": priors,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out.with_suffix(".json"), json.dumps(with_provenance(results, prov), indent=1) + "\n")
    text = render_markdown(results)
    write_atomic(out, text + provenance_markdown(prov))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
