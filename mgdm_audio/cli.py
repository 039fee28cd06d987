"""The ``mgdm-audio`` command line (floor 4: parse flags, call one function, print).

    mgdm-audio separate FILES... [-n PRIOR] [-o OUT] [--sampler mgdm] [--preset fast|default|paper] [--n-samples K]
    mgdm-audio make-dataset slakh-style -o OUT [...] | --recipe recipes/data/slakh-style.yaml -o OUT
    mgdm-audio train RECIPE.yaml [--out DIR] [--resume] | RECIPE.yaml --out DIR --export-only [--export DIR]
    mgdm-audio generate -n PRIOR --seconds S --seed S -o OUT
    mgdm-audio benchmark gmm [--quick] [--json PATH] [--markdown PATH] [--plot PNG] [--samplers a,b] [--no-scaling]
                             [--seed-base N]
    mgdm-audio benchmark separation --root DIR --layout slakh|musdb [--prior P] [--samplers a,b] [--max-chunks N]
    mgdm-audio benchmark image [--prior P] [--tasks all|t1,t2] [--samplers a,b:paper] [--preset fast] [--n-images N]
    mgdm-audio restore IMAGE --task TASK --prior P [--sampler mgdm] [--preset fast] [--n-samples K] [--degrade] -o OUT
    mgdm-audio info

A user mistake prints one sentence on stderr and exits with status 2; a bug of the package (a broken internal
invariant) prints one "this is a bug" line and exits with status 1, with the traceback under ``--debug`` or
``MGDM_AUDIO_DEBUG=1``. Outputs are written to a temporary name and renamed, so an interrupted run never leaves a
half-written file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mgdm_audio import __version__
from mgdm_audio.core.errors import InternalError, UserInputError
from mgdm_audio.core.runtime import keep_freed_memory

DEBUG_ENV = "MGDM_AUDIO_DEBUG"
"""Set to 1 to see the traceback of an internal error (as ``--debug`` does)."""


def _benchmark(args: argparse.Namespace) -> int:
    """Any registered engine: run it, write its JSON / Markdown / plot with the regenerating command, print."""
    from mgdm_audio.benchmarks import load_engine
    from mgdm_audio.benchmarks.harness import write_outputs

    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    report = load_engine(args.suite).run(args)
    if report is None:  # a torchrun rank other than 0: rank 0 writes the outputs
        return 0
    write_outputs(report, args.json, args.markdown, args.plot, args.argv)
    print(report.text)
    return 0


def _info(args: argparse.Namespace) -> int:
    from mgdm_audio.samplers.registry import get_sampler, sampler_names

    print(f"mgdm_audio {__version__}")
    for name in sampler_names():
        try:
            spec = get_sampler(name)
        except ImportError:
            print(f"  {name:9s} (not available)")
            continue
        presets = ", ".join(["default", *spec.presets])
        needs = "svd" if spec.needs_svd else "linear" if spec.needs_linear else "any operator"
        print(f"  {name:9s} needs {needs:12s} presets: {presets}\n            {spec.summary}")
    from mgdm_audio.audio.priors import available_priors
    from mgdm_audio.image.operators import TASKS
    from mgdm_audio.image.priors import available_image_priors

    print(f"shipped audio priors: {', '.join(available_priors()) or 'none'}")
    print(f"shipped image models: {', '.join(available_image_priors()) or 'none'}")
    print(f"image tasks: {', '.join(TASKS)}")
    return 0


def _make_dataset(args: argparse.Namespace) -> int:
    from mgdm_audio.audio.data.render import SplitSpec, check_disjoint, load_recipe, render_split

    if args.recipe:
        recipe = load_recipe(args.recipe)
        for spec in recipe.splits:
            spec.soundfont = args.soundfont or spec.soundfont
            spec.renderer = args.renderer or spec.renderer
        print(f"content keys per split (test splits disjoint from train): {check_disjoint(recipe)}")
        specs, sample_rate = recipe.splits, args.sample_rate or recipe.sample_rate
    else:
        spec = SplitSpec(
            name=args.split,
            chorale_titles="held_out" if args.split.startswith("test") else "train",
            renderer=args.renderer or "auto",
            **{name: getattr(args, name) for name in ("source", "tracks", "seconds", "seed", "soundfont")},
        )
        specs, sample_rate = [spec], args.sample_rate or 22050
    for spec in specs:
        render_split(
            args.out,
            spec,
            sample_rate=sample_rate,
            workers=args.workers,
            skip_existing=args.skip_existing,
            progress=not args.no_progress,
            log=print,
        )
    return 0


def _train(args: argparse.Namespace) -> int:
    from mgdm_audio.training.__main__ import run_from_args

    return run_from_args(args)


def _generate(args: argparse.Namespace) -> int:
    import torch

    from mgdm_audio.audio.io import write_audio
    from mgdm_audio.audio.priors import generate, load_prior

    if args.num_samples < 1:
        raise UserInputError(f"--num-samples must be at least 1, got {args.num_samples}.")
    if args.threads:
        torch.set_num_threads(args.threads)
    prior = load_prior(args.model, device=args.device)
    samples = generate(prior, args.num_samples, args.seconds, args.seed, steps=args.steps, eta=args.eta)
    out = Path(args.out)
    for k, stems in enumerate(samples):
        folder = out / f"sample_{k}"
        for name, wav in zip(prior.stems, stems, strict=True):
            write_audio(folder / f"{name}.wav", wav.unsqueeze(0), prior.sample_rate, subtype="FLOAT")
        write_audio(folder / "mix.wav", stems.sum(0, keepdim=True), prior.sample_rate, subtype="FLOAT")
    print(f"wrote {len(samples)} sample(s) of {args.seconds:g} s ({', '.join(prior.stems)} + mix) to {out}")
    return 0


def _separate(args: argparse.Namespace) -> int:
    from mgdm_audio.audio.separate_files import OutputOptions, expand_inputs, separate_files
    from mgdm_audio.audio.separator import Separator

    files = expand_inputs(args.files)
    if not 0 < args.overlap < 0.5:
        raise UserInputError(f"--overlap must be a fraction in (0, 0.5), got {args.overlap}.")
    if args.n_samples < 1:
        raise UserInputError(f"--n-samples must be at least 1, got {args.n_samples}.")
    if args.segment is not None and not args.segment > 0:
        raise UserInputError(f"--segment must be a positive number of seconds, got {args.segment}.")
    if not 8 <= args.mp3_bitrate <= 320:
        raise UserInputError(f"--mp3-bitrate must be between 8 and 320 kbit/s, got {args.mp3_bitrate}.")
    fmt = "mp3" if args.mp3 else "flac" if args.flac else "wav"
    subtype = "FLOAT" if args.float32 else "PCM_24" if args.int24 else "PCM_16" if args.prior_rate_mono else None
    if fmt == "flac" and subtype == "FLOAT":
        raise UserInputError("FLAC stores integers only: use --int24 (or WAV with --float32).")
    bar = None
    show = not args.no_progress and not args.json
    track = {"done_seconds": 0.0, "total_seconds": 0.0, "name": ""}

    def on_track(state: dict) -> None:  # every input has been checked: the bar appears when the work starts
        nonlocal bar
        track.update(done_seconds=state["done_seconds"], total_seconds=state["total_seconds"])
        if show and bar is None:
            from tqdm import tqdm

            bar = tqdm(
                total=round(state["total_seconds"], 1),
                desc=f"[1/{state['count']}] {state['path'].name}",
                unit="s",
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s of audio [{elapsed}<{remaining}]",
            )
        if bar is not None:
            bar.set_description(f"[{state['index'] + 1}/{state['count']}] {state['path'].name}")

    def progress(state: dict) -> None:  # per sampler step of every batch of chunks
        if bar is not None:
            bar.update(round(track["done_seconds"] + state["done_seconds"], 1) - bar.n)

    separator = Separator(
        prior=args.name,
        sampler=args.sampler,
        preset=args.preset,
        device=args.device,
        chunk_seconds=args.segment,
        overlap=args.overlap,
        batch_chunks=args.batch_chunks,
        n_samples=args.n_samples,
        seed=args.seed,
        callback=progress,
        output="prior" if args.prior_rate_mono else "input",
        init=args.init,
        init_sigma=args.init_sigma,
    )
    options = OutputOptions(
        fmt, subtype, args.two_stems, args.skip_existing, args.force, args.plot, args.clip_mode, args.mp3_bitrate
    )
    try:
        summaries = separate_files(files, Path(args.out), separator, options, on_track=on_track)
    except BaseException:
        if bar is not None:
            bar.close()
            sys.stderr.write("\n" if bar.n < bar.total else "")  # the error that follows gets a line of its own
        raise
    if bar is not None:
        bar.close()
    if args.json:
        print(json.dumps(summaries, indent=2, default=str))
        return 0
    for s in summaries:
        if s.get("skipped"):
            print(f"{s['input']}: outputs exist in {s['output']}, skipped")
            continue
        print(
            f"{s['input']} -> {Path(s['outputs'][0]).parent}  ({s['audio_seconds']:.1f} s of audio in "
            f"{s['seconds']:.1f} s, real-time factor {s['real_time_factor']:.2f}, {s['nfe']} NFE; "
            f"{s['channels']} ch, {s['sample_rate']} Hz)"
        )
    clipped = [(s["input"], s["clipped_samples"]) for s in summaries if s.get("clipped_samples")]
    if clipped:
        files_clipped = sum(len(c) for _, c in clipped)
        samples = sum(sum(c.values()) for _, c in clipped)
        print(
            f"note: {samples} samples in {files_clipped} stem file(s) of {len(clipped)} track(s) were beyond [-1, 1] "
            "and were clamped; --clip-mode rescale scales each track's stems down together, --float32 keeps them.",
            file=sys.stderr,
        )
    return 0


def _restore(args: argparse.Namespace) -> int:
    from mgdm_audio.image.restore import restore

    bars: list = []  # the tqdm bar, made at the sampler's first step (after the input notes)

    def progress(state: dict) -> None:  # sampler steps: {"i", "total", ...}
        if args.no_progress or args.json or "i" not in state or "total" not in state:
            return
        total = max(int(state["total"]), 1)
        if not bars:
            from tqdm import tqdm

            bars.append(tqdm(total=total, unit="step", desc=f"restoring ({args.sampler})"))
        bars[0].n = max(bars[0].n, min(int(state["i"]), total))
        bars[0].refresh()

    def note(text: str) -> None:
        print(f"note: {text}", file=sys.stderr)

    try:
        flags = ("task", "prior", "sampler", "preset", "n_samples", "degrade", "seed", "sigma_y", "device")
        options = {name: getattr(args, name) for name in (*flags, "kernel_wizard")}
        summary = restore(args.image, args.out, callback=progress, note=note, **options)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        score = f", PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.3f}" if summary["psnr"] is not None else ""
        print(
            f"{summary['task']}: {summary['sampler']} ({summary['preset']}), K={summary['n_samples']}, "
            f"{summary['nfe']} NFE, {summary['vjp']} VJP, {summary['seconds']:.1f} s{score} -> "
            f"{', '.join(summary['outputs'])}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgdm-audio", description="Posterior sampling with diffusion priors.")
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error (a bug)")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("benchmark", help="run a benchmark suite")
    bench_sub = bench.add_subparsers(dest="suite", required=True)
    from mgdm_audio.benchmarks import ENGINES, load_engine
    from mgdm_audio.benchmarks.harness import add_output_arguments

    for name in ENGINES:
        engine = load_engine(name)
        engine_parser = bench_sub.add_parser(name, help=engine.HELP)
        engine.add_arguments(engine_parser)
        add_output_arguments(engine_parser, engine.PLOT)
        engine_parser.set_defaults(func=_benchmark)
    data = sub.add_parser("make-dataset", help="render a Slakh-style 4-stem dataset (bass, drums, guitar, piano)")
    data.add_argument("kind", nargs="?", default="slakh-style", choices=["slakh-style"])
    data.add_argument("-o", "--out", required=True, metavar="OUT", help="tracks go to OUT/SPLIT/TrackNNNNN")
    data.add_argument("--recipe", metavar="PATH", help="render every split of a recipe YAML (recipes/data/*.yaml)")
    data.add_argument("--split", default="train", help="split folder name (test*: held-out chorale titles)")
    data.add_argument("--tracks", type=int, default=10)
    data.add_argument("--seconds", type=float, default=30.0, help="track length (chorales: at most)")
    data.add_argument("--seed", type=int, default=0, help="track i uses seed + i")
    data.add_argument("--soundfont", metavar="PATH", help="SF2 file (default: FluidR3_GM, else pretty_midi's TimGM6mb)")
    data.add_argument("--renderer", choices=["auto", "fluidsynth", "tinysoundfont"], help="default: auto")
    data.add_argument("--source", default="procedural", help="procedural or chorales")
    data.add_argument("--sample-rate", type=int, help="Hz (default 22050, or the recipe's)")
    data.add_argument("--workers", type=int, default=1, help="processes, one synthesiser each")
    data.add_argument(
        "--skip-existing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep complete tracks (those with metadata.json)",
    )
    data.add_argument("--no-progress", action="store_true")
    data.set_defaults(func=_make_dataset)
    train = sub.add_parser("train", help="train a diffusion prior from a recipe (DDP: torchrun -m mgdm_audio.training)")
    from mgdm_audio.training.__main__ import add_train_arguments

    add_train_arguments(train)
    train.set_defaults(func=_train)
    gen = sub.add_parser("generate", help="unconditional multi-stem samples from a prior")
    gen.add_argument("-n", "--model", required=True, help="shipped prior name or export folder")
    gen.add_argument("--seconds", type=float, default=4.0, help="length of each sample")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=50, help="DDIM steps on the prior's noise-level table")
    gen.add_argument(
        "--eta", type=float, default=0.0, help="DDIM eta (0: deterministic, the default; 1: ancestral, noisier here)"
    )
    gen.add_argument("--num-samples", type=int, default=1, help="how many samples (OUT/sample_K/)")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    gen.add_argument("-o", "--out", required=True, help="output folder")
    gen.set_defaults(func=_generate)
    sep = sub.add_parser("separate", help="separate mixture files into stems (the main job)")
    sep.add_argument(
        "files",
        nargs="+",
        help="audio files or folders of them (wav, flac, mp3, ogg, m4a, ...: what FFmpeg reads)",
    )
    sep.add_argument("-n", "--name", default="slakh-style-small", help="prior: a shipped name or an export folder")
    sep.add_argument("-o", "--out", default="separated", help="output root: OUT/PRIOR/TRACK/STEM.wav")
    sep.add_argument(
        "--sampler", default="mgdm", help="posterior sampler (see `mgdm-audio info`), or demucs: the --init separator"
    )
    sep.add_argument("--init", default=None, help="discriminative separator (export folder or name) for warm starts")
    sep.add_argument("--init-sigma", type=float, default=None, help="warm start: the --init estimate noised to this")
    sep.add_argument("--preset", default="default", help="fast | default | paper, or one of the sampler's presets")
    sep.add_argument("-d", "--device", default="auto", help="auto | cpu | cuda")
    sep.add_argument("--segment", type=float, default=None, help="chunk length in seconds (default: the prior's)")
    sep.add_argument("--overlap", type=float, default=0.25, help="overlap fraction between chunks, in (0, 0.5)")
    sep.add_argument("--batch-chunks", type=int, default=4, help="even chunks separated together (one network batch)")
    sep.add_argument("--n-samples", type=int, default=1, help="posterior samples per track (mean + spread)")
    sep.add_argument("--seed", type=int, default=0)
    sep.add_argument(
        "--prior-rate-mono",
        action="store_true",
        help="write the prior's mono stems at its rate, 16-bit (default: the input's channels, rate and bit depth; "
        "the stems sum to the input)",
    )
    enc = sep.add_mutually_exclusive_group()
    enc.add_argument("--mp3", action="store_true", help="write MP3 (at the input's rate; see --mp3-bitrate)")
    enc.add_argument("--flac", action="store_true", help="write FLAC")
    sep.add_argument("--mp3-bitrate", type=int, default=320, help="MP3 bit rate in kbit/s (default: 320)")
    depth = sep.add_mutually_exclusive_group()
    depth.add_argument("--int24", action="store_true", help="24-bit integer samples (default: the input's depth)")
    depth.add_argument("--float32", action="store_true", help="32-bit float WAV (default: the input's depth)")
    sep.add_argument(
        "--clip-mode",
        choices=["clamp", "rescale"],
        default="clamp",
        help="integer and MP3 outputs: clamp samples beyond [-1, 1] (default), or rescale the track's stems together",
    )
    sep.add_argument("--two-stems", default=None, metavar="STEM", help="write STEM and no_STEM only")
    sep.add_argument("--skip-existing", action="store_true", help="skip tracks whose outputs exist")
    sep.add_argument("--force", action="store_true", help="overwrite existing outputs")
    sep.add_argument("--plot", action="store_true", help="write separation.png (spectrograms, spread)")
    sep.add_argument("--json", action="store_true", help="print the run summaries as JSON")
    sep.add_argument("--no-progress", action="store_true")
    sep.set_defaults(func=_separate)
    from mgdm_audio.benchmarks.image import KERNEL_WIZARD_HELP
    from mgdm_audio.image.operators import TASKS
    from mgdm_audio.image.restore import INPUT_RULES

    rs = sub.add_parser(
        "restore",
        help="restore an image (ten tasks) with an image prior and a posterior sampler",
        epilog=INPUT_RULES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rs.add_argument("image", help="image file (PNG, JPEG, ...) or .npy array; see the input rules below")
    rs.add_argument("--task", required=True, help="one of: " + ", ".join(TASKS))
    rs.add_argument(
        "--prior",
        default="fashion-mnist-pixel",
        help="image prior: a shipped name (fashion-mnist-pixel, fashion-mnist-latent) or an export folder",
    )
    rs.add_argument("--sampler", default="mgdm", help="posterior sampler (see `mgdm-audio info`)")
    rs.add_argument("--preset", default="default", help="fast | default | paper, or one of the sampler's presets")
    rs.add_argument("--n-samples", type=int, default=1, help="posterior samples K (K > 1: mean and spread panels)")
    rs.add_argument("--degrade", action="store_true", help="IMAGE is clean: make the measurement from it")
    rs.add_argument("--seed", type=int, default=0, help="sampler seed (the measurement noise uses seed + 1000003)")
    rs.add_argument("--sigma-y", type=float, default=0.05, help="measurement noise std on [-1, 1] images")
    rs.add_argument("-d", "--device", default="auto", help="auto | cpu | cuda")
    rs.add_argument("-o", "--out", required=True, metavar="OUT.png", help="figure; OUT_restored.png is the image")
    rs.add_argument("--json", action="store_true", help="print the run summary as JSON")
    rs.add_argument("--no-progress", action="store_true")
    rs.add_argument("--kernel-wizard", metavar="WEIGHTS", help=KERNEL_WIZARD_HELP)
    rs.set_defaults(func=_restore)

    info = sub.add_parser("info", help="list samplers, their presets and requirements")
    info.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command that regenerates an output
    keep_freed_memory()  # large temporaries are reused instead of re-faulted on every sampler step (core/runtime.py)
    try:
        return int(args.func(args))
    except UserInputError as err:
        print(f"mgdm-audio: error: {err}", file=sys.stderr)
        return 2
    except (InternalError, AssertionError) as err:
        if args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        print(f"mgdm-audio: this is a bug, please report it: {what} (--debug shows the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mgdm-audio: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mgdm-audio info | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
