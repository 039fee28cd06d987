r"""The prior's report ``evaluation/results/prior.md`` (+ ``prior.json`` with the raw numbers, ``prior_mels.png``).

    python evaluation/prior/report.py --prior slakh-style-small --data-root /work/data/slakh-style \
        --out evaluation/results/prior.md [--samples 32] [--seed 0] [--threads 2]

What it measures (issue 4, "Must show"); the classifier, the baselines and the statistics are the package's
(``mgdm_audio.metrics.stem_classifier``, ``mgdm_audio.audio.baselines``, ``mgdm_audio.metrics.signal_stats``):

1. **Denoising loss per ln-sigma band** on the ``test`` split: ``--chunks`` chunks of the prior's chunk length,
   picked by a permutation seeded with ``--seed`` from the sequential (non-overlapping) chunks; the trainer's
   :class:`~mgdm_audio.training.trainer.Validator` (one sigma per band and item, uniform in ``ln sigma``, fixed
   noise, bands ``[-7, -5, -3, -1, 3)``) and its EDM-weighted loss
   ``lambda(sigma) mean((D(x0 + sigma n, sigma) - x0)^2)``, ``lambda = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2``,
   for the prior and two trivial denoisers: *silence* ``D = 0`` (the per-stem mean, audio being zero-mean) and
   *skip path* ``D = clamp(c_skip x)`` (the EDM preconditioning with the network output ``F = 0``, i.e. the
   untrained prior). Before clamping the skip path scores ``(sigma^2 r^2 / sigma_d^2 + sigma_d^2) / (sigma^2 +
   sigma_d^2)`` for data of RMS ``r`` (1 when ``r = sigma_d``); silence scores ``lambda(sigma) r^2``.
2. **Stem classification of unconditional samples**: a multinomial logistic regression on gain-invariant log-mel
   features (each stem scaled to unit RMS; 64 mel bands, mean and standard deviation over frames) trained on
   the active stems (RMS above ``--silence-db``) of ``--train-chunks`` seeded chunks of the ``train`` split,
   checked on the active stems of the test chunks, then applied to every stem of ``--samples`` samples of
   ``generate(prior, samples, chunk seconds, seed)`` (deterministic DDIM, ``--eta 0``, generate's default). A
   generated stem counts as recognised when the classifier names the stem (channel) it was generated as; silent
   generated stems count as errors. Target: >= 80 %. The same seeds with ``--compare-eta`` (default 1, the ancestral
   sampler) are classified too and reported beside, so the effect of the sampler stays visible. The classifier
   depends on which train chunks it is fitted to: ``--classifier-seeds`` refits it on other seeded draws of
   ``--train-chunks`` train chunks and re-classifies the same generated samples (reported as a spread; the headline
   stays the classifier of ``--seed``).
3. A mel-spectrogram figure (4 generated samples beside 4 real test chunks, one row per stem).
4. Parameter count and the median wall time of one denoiser call on ``1 x 4 x 65536`` (forward under
   ``no_grad`` and forward+backward to the input), with ``--threads`` CPU threads, through
   :func:`mgdm_audio.metrics.timing.denoiser_call_seconds`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mgdm_audio.audio.baselines import WIENER, denoising_bands
from mgdm_audio.audio.data.readers import seeded_slakh_chunks
from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance, with_provenance
from mgdm_audio.core.atomic import write_atomic
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.metrics.signal_stats import dynamics, spectral_balance
from mgdm_audio.metrics.stem_classifier import SILENCE_DB, fit_stem_classifier, log_mel, stem_accuracy
from mgdm_audio.metrics.timing import denoiser_call_seconds


def slakh_chunks(root: str, split: str, prior: Any, n: int, seed: int) -> Tensor:
    """``n`` seeded sequential chunks of a split, at the prior's stems, rate and chunk length."""
    return seeded_slakh_chunks(root, split, prior.stems, prior.sample_rate, prior.chunk_samples, n, seed)


# -------------------------------------------------------------------------------------------- figure


def plot_mels(generated: Tensor, real: Tensor, stem_names: list[str], sample_rate: int, path: Path) -> None:
    """One row per stem: 4 generated samples, then 4 real test chunks (log-mel, dB, shared colour range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [("generated", i, generated[i]) for i in range(min(4, len(generated)))]
    columns += [("real test", i, real[i]) for i in range(min(4, len(real)))]
    fig, axes = plt.subplots(len(stem_names), len(columns), figsize=(2.0 * len(columns), 1.6 * len(stem_names)))
    axes = [[axes]] if len(stem_names) == 1 and len(columns) == 1 else axes
    for c, (kind, i, chunk) in enumerate(columns):
        mel_db = 10 * log_mel(chunk.float(), sample_rate)
        for r, name in enumerate(stem_names):
            ax = axes[r][c]
            ax.imshow(mel_db[r].numpy(), origin="lower", aspect="auto", vmin=-100, vmax=20, cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{kind} {i}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle("log-mel spectrograms (64 bands, 0 - 11 kHz, -100 to 20 dB): generated | real", fontsize=9)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=90)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- timings


def denoiser_timings(module: nn.Module, threads: int, repeats: int, length: int = 65536) -> dict[str, float]:
    """Median seconds of one call on ``1 x S x length`` (forward; forward+backward to the input)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = 0.05 * torch.randn(1, module.unet_config.stems, length, generator=torch.Generator().manual_seed(0))
    try:
        return {**denoiser_call_seconds(module, x, 0.5, repeats), "threads": threads, "repeats": repeats}
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------ markdown


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f} %"


def other_classifiers(
    args: argparse.Namespace, prior: Any, stems: list[str], generated: Tensor
) -> list[dict[str, Any]]:
    """The generated samples classified by classifiers fitted to other seeded draws of train chunks."""
    out = []
    for seed in args.classifier_seeds:
        chunks = slakh_chunks(args.data_root, "train", prior, args.train_chunks, seed)
        fitted, _ = fit_stem_classifier(chunks, prior.sample_rate, args.silence_db)
        acc = stem_accuracy(fitted, generated, stems, prior.sample_rate, args.silence_db, True)
        out.append({"train_seed": seed, **acc})
    return out


def _other_classifiers_line(r: dict[str, Any]) -> list[str]:
    others = r["classification"].get("other_classifiers") or []
    if not others:
        return []
    cells = []
    for o in others:
        per = ", ".join(f"{k} {v['correct']}" for k, v in o["per_stem"].items())
        cells.append(f"seed {o['train_seed']}: {o['correct']}/{o['scored']} ({per})")
    accs = [o["accuracy"] for o in others]
    n_train = r["classification"]["train_chunks"]
    return [
        f"The classifier depends on its train chunks: refitted on other seeded draws of {n_train} train chunks, "
        f"it recognises {min(accs) * 100:.1f}-{max(accs) * 100:.1f} % of the same generated stems "
        f"({'; '.join(cells)}). The headline above is the classifier of seed {r['seed']}.",
        "",
    ]


def _compare_line(r: dict[str, Any]) -> list[str]:
    other = r["classification"].get("generated_compare")
    if other is None:
        return []
    per = ", ".join(f"{k} {v['correct']}/{v['scored']}" for k, v in other["per_stem"].items())
    return [
        f"The same seeds generated with eta {r['compare_eta']:g} (eta 1: the ancestral sampler, which re-injects "
        f"noise at every step): {other['correct']}/{other['scored']} ({_pct(other['accuracy'])}) recognised "
        f"({per}). The spectral-balance and dynamics sections below describe the eta {r['ddim_eta']:g} samples.",
        "",
    ]


def render_markdown(r: dict[str, Any]) -> str:
    """The report text from the raw results of :func:`main`."""
    stems = r["stems"]
    lines = [
        f"# Prior report: `{r['prior']}`",
        "",
        f"Produced by `{r['command']}` on {r['date']}.",
        "",
        "| field | value |",
        "|---|---|",
        f"| weights sha256 | `{r['weights_sha256']}` |",
        f"| training steps | {r['training_steps']} |",
        f"| parameters | {r['parameters']:,} |",
        *(
            [
                f"| load_prior time (target < 2 s) | first load {r['load_seconds'][0]:.2f} s (in a process with "
                f"torch imported), then {', '.join(f'{v:.2f}' for v in r['load_seconds'][1:])} s |"
            ]
            if "load_seconds" in r
            else []
        ),
        f"| stems / sample rate / chunk | {', '.join(stems)} / {r['sample_rate']} Hz / {r['chunk_samples']} samples |",
        f"| data | `{r['data_root']}` (classifier: `train`; everything else: `test`) |",
        "",
        "## Denoising loss per ln-sigma band (test split)",
        "",
        f"{r['test_chunks']} test chunks of {r['chunk_samples']} samples (seeded choice, seed {r['seed']}); the "
        "trainer's validation protocol: one sigma per band and chunk (uniform in ln sigma), fixed noise, EDM-weighted "
        "loss `lambda(sigma) mean((D - x0)^2)`. Baselines: **silence** `D = 0` (the per-stem mean of zero-mean "
        "audio) and **skip path** `D = clamp(c_skip x)` (the EDM preconditioning with network output 0, i.e. an "
        "untrained prior; before clamping it scores `(sigma^2 rms^2 / sigma_d^2 + sigma_d^2) / (sigma^2 + sigma_d^2)`, "
        "which is 1 only when the data RMS equals sigma_d), and **Wiener** `D = clamp(W_sigma x)`, a per-stem "
        "Wiener filter with the power spectra of the classifier's train chunks (the MMSE denoiser of a stationary "
        "Gaussian prior; no learning beyond a spectrum). Lower is better.",
        "",
        "| band | prior | silence D=0 | skip path D=c_skip x | Wiener D=W x | prior / skip path | prior / Wiener |",
        "|---|---|---|---|---|---|---|",
    ]
    bands = r["denoising"]
    for band in bands["prior"]:
        p, z, k = bands["prior"][band], bands["silence D=0"][band], bands["skip path D=c_skip x"][band]
        w = bands.get(WIENER, {}).get(band, float("nan"))
        lines.append(f"| {band} | {p:.4f} | {z:.4g} | {k:.4f} | {w:.4f} | {p / k:.3f} | {p / w:.3f} |")
    c = r["classification"]
    lines += [
        "",
        "## Stem classification of unconditional samples",
        "",
        f"{r['samples']} samples of {r['chunk_samples']} samples each from `generate(prior, {r['samples']}, "
        f"{r['chunk_samples']}/{r['sample_rate']} s, seed={r['seed']})` (DDIM, {r['ddim_steps']} steps, "
        f"eta {r.get('ddim_eta', 1.0):g}). "
        "Classifier: multinomial logistic regression on gain-invariant log-mel features (unit-RMS stem, "
        f"64 mel bands, mean and std over frames), trained on the {c['train_stems']} active stems of "
        f"{c['train_chunks']} seeded `train` chunks. "
        f"Silent = RMS below {r['silence_db']:g} dBFS; silent generated stems count as errors. Target: >= 80 %.",
        "",
        "| stem | generated: recognised | generated: silent | generated / real: median RMS | "
        "real test (active stems): recognised |",
        "|---|---|---|---|---|",
    ]
    gen, real = c["generated"], c["real_test"]
    for name in stems:
        g, t = gen["per_stem"][name], real["per_stem"][name]
        lines.append(
            f"| {name} | {g['correct']}/{g['scored']} ({_pct(g['accuracy'])}) | {g['silent']}/{r['samples']} | "
            f"{g['median_rms_db']:.1f} / {t['median_rms_db']:.1f} dBFS | {t['correct']}/{t['scored']} "
            f"({_pct(t['accuracy'])}) |"
        )
    lines += [
        f"| **all** | **{gen['correct']}/{gen['scored']} ({_pct(gen['accuracy'])})** | "
        f"{_pct(gen['silent_fraction'])} | | {real['correct']}/{real['scored']} ({_pct(real['accuracy'])}) |",
        "",
        f"Target >= 80 % of generated stems recognised: **{'met' if gen['accuracy'] >= 0.8 else 'not met'}**. "
        f"Confusion of the generated active stems (rows: generated as, columns: classified as {stems}): "
        f"`{gen['confusion_active']}`.",
        "",
        *_compare_line(r),
        *_other_classifiers_line(r),
        "## Spectral balance",
        "",
        f"Median fraction of each stem's energy above {r['spectral_balance']['cutoff_hz']:.0f} Hz (a quarter of "
        "Nyquist; white noise: 75 %). A prior that leaves noise in its samples shows it here first.",
        "",
        "| stem | generated | real test |",
        "|---|---|---|",
        *(
            f"| {name} | {_pct(v['generated'])} | {_pct(v['real'])} |"
            for name, v in r["spectral_balance"]["per_stem"].items()
        ),
        "",
        "## Dynamics",
        "",
        f"Median coefficient of variation of each stem's frame RMS ({r['dynamics']['frame']}-sample frames, std / mean "
        "over the chunk; a steady tone: 0, stationary white noise: about 0.03). A prior that learned each stem's "
        "spectrum but not its notes and hits generates stationary textures, and shows it here.",
        "",
        "| stem | generated | real test |",
        "|---|---|---|",
        *(f"| {name} | {v['generated']:.2f} | {v['real']:.2f} |" for name, v in r["dynamics"]["per_stem"].items()),
        "",
        "## Mel spectrograms",
        "",
        f"![4 generated samples beside 4 real test chunks, one row per stem]({r['figure']})",
        "",
        "## Cost of one denoiser call (1 x 4 x 65536 samples)",
        "",
        f"Median of {r['timing']['repeats']} calls, {r['timing']['threads']} CPU threads: forward "
        f"**{1000 * r['timing']['forward_s']:.1f} ms**, forward+backward to the input (VJP) "
        f"**{1000 * r['timing']['vjp_s']:.1f} ms** (issue target for `small`: forward <= 60 ms on 2 cores). "
        f"Machine load average (1, 5, 15 min) when measured: {', '.join(f'{v:.2f}' for v in r['loadavg'])} "
        f"on {os.cpu_count()} cores; timings taken while other work (e.g. a training) runs are pessimistic.",
        "",
        f"Raw numbers: `{r['json']}`.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", required=True, help="shipped prior name or export folder")
    parser.add_argument("--data-root", required=True, help="dataset root holding the train and test splits")
    parser.add_argument("--out", default="evaluation/results/prior.md", help="markdown report (JSON/PNG beside)")
    parser.add_argument("--samples", type=int, default=32, help="unconditional samples to classify")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=64, help="test chunks for the denoising bands")
    parser.add_argument("--train-chunks", type=int, default=256, help="train chunks for the classifier")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps of the generation")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta of the generation (generate's default)")
    parser.add_argument("--compare-eta", type=float, default=1.0, help="also classify the same seeds at this eta")
    parser.add_argument(
        "--classifier-seeds", default="1,2,3,4", help="other train-chunk draws to refit the classifier on ('' for none)"
    )
    parser.add_argument("--silence-db", type=float, default=SILENCE_DB)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (timings and everything else)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per median")
    args = parser.parse_args(argv)
    try:
        args.classifier_seeds = [int(v) for v in args.classifier_seeds.split(",") if v.strip()]
    except ValueError:
        print("error: --classifier-seeds must be comma-separated integers (or '').", file=sys.stderr)
        return 2
    try:
        return _run(args, argv)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    from mgdm_audio.audio.model import count_parameters
    from mgdm_audio.audio.priors import generate, load_prior

    if args.samples < 1 or args.chunks < 1 or args.train_chunks < 1:
        raise UserInputError("--samples, --chunks and --train-chunks must be at least 1.")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out.with_suffix(".json"), out.with_name(f"{out.stem}_mels.png")
    load_seconds = []
    for _ in range(3):  # the first load also imports the model code; then two more
        start = time.perf_counter()
        prior = load_prior(args.prior)
        load_seconds.append(time.perf_counter() - start)
    stems = list(prior.stems)
    given = sys.argv[1:] if argv is None else argv
    prov = script_provenance(prior.weights_sha256, "cpu", ["evaluation/prior/report.py", *given])  # before the work
    results: dict[str, Any] = {
        "prior": str(args.prior),
        "command": prov["command"],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "weights_sha256": prior.weights_sha256,
        "load_seconds": load_seconds,
        "training_steps": prior.config.get("training_steps"),
        "parameters": count_parameters(prior.module),
        "stems": stems,
        "sample_rate": prior.sample_rate,
        "chunk_samples": prior.chunk_samples,
        "data_root": str(args.data_root),
        "seed": args.seed,
        "samples": args.samples,
        "ddim_steps": args.steps,
        "ddim_eta": args.eta,
        "compare_eta": args.compare_eta,
        "silence_db": args.silence_db,
        "test_chunks": args.chunks,
        "figure": png_path.name,
        "json": json_path.name,
    }
    print("timing the denoiser ...", flush=True)
    results["loadavg"] = list(os.getloadavg())
    results["timing"] = denoiser_timings(prior.module, args.threads, args.repeats)
    print("denoising bands on the test split ...", flush=True)
    test = slakh_chunks(args.data_root, "test", prior, args.chunks, args.seed)
    train_chunks = slakh_chunks(args.data_root, "train", prior, args.train_chunks, args.seed)
    results["denoising"] = denoising_bands(prior.module, test, train_chunks=train_chunks)
    print("training the stem classifier ...", flush=True)
    classifier, n_train_stems = fit_stem_classifier(train_chunks, prior.sample_rate, args.silence_db)
    print(f"generating {args.samples} samples ...", flush=True)
    seconds = prior.chunk_samples / prior.sample_rate
    generated = generate(prior, args.samples, seconds, args.seed, steps=args.steps, eta=args.eta)
    compared = generate(prior, args.samples, seconds, args.seed, steps=args.steps, eta=args.compare_eta)
    results["classification"] = {
        "train_chunks": args.train_chunks,
        "train_stems": n_train_stems,
        "real_test": stem_accuracy(classifier, test, stems, prior.sample_rate, args.silence_db, False),
        "generated": stem_accuracy(classifier, generated, stems, prior.sample_rate, args.silence_db, True),
        "generated_compare": stem_accuracy(classifier, compared, stems, prior.sample_rate, args.silence_db, True),
        "other_classifiers": other_classifiers(args, prior, stems, generated),
    }
    results["spectral_balance"] = spectral_balance(generated, test, stems, prior.sample_rate)
    results["dynamics"] = dynamics(generated, test, stems)
    plot_mels(generated, test, stems, prior.sample_rate, png_path)
    write_atomic(json_path, json.dumps(with_provenance(results, prov), indent=1) + "\n")
    text = render_markdown(results)
    write_atomic(out, text + provenance_markdown(prov))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
