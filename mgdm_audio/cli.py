"""The ``mgdm-audio`` command line (floor 4: parse flags, call one function, print).

    mgdm-audio separate FILES... [-n PRIOR] [-o OUT] [--sampler mgdm] [--preset fast|default|paper|tuned]
                        [--n-samples K]
    mgdm-audio make-dataset slakh-style -o OUT [...] | --recipe recipes/data/slakh-style.yaml -o OUT
    mgdm-audio train RECIPE.yaml [--out DIR] [--resume] | RECIPE.yaml --out DIR --export-only [--export DIR]
    mgdm-audio generate -n PRIOR --seconds S --seed S -o OUT
    mgdm-audio benchmark gmm [--quick] [--json PATH] [--markdown PATH] [--plot PNG] [--samplers a,b] [--no-scaling]
                             [--seed-base N] [--problems N] [--equal-compute [--match-at closest|median]]
    mgdm-audio benchmark separation --root DIR --layout slakh|musdb [--prior P] [--samplers a,b] [--max-chunks N]
    mgdm-audio benchmark image [--prior P] [--tasks all|t1,t2] [--samplers a,b:paper] [--preset fast] [--n-images N]
    mgdm-audio restore IMAGE --task TASK --prior P [--sampler mgdm] [--preset fast] [--n-samples K] [--degrade] -o OUT
    mgdm-audio info

A user mistake prints one sentence on stderr and exits with status 2; a bug of the package (a broken internal
invariant) prints one "this is a bug" line and exits with status 1, with the traceback under ``--debug`` or
``MGDM_AUDIO_DEBUG=1``. Outputs are written to a temporary name and renamed, so an interrupted run never leaves a
half-written file. SIGTERM and SIGHUP stop a run as SIGINT (Ctrl-C) does: the files and folders of the unfinished
work are removed, and the exit status is 128 + the signal's number.

This module imports only the standard library at load time: each subcommand imports what it needs when it runs
(``mgdm-audio --help`` answers without loading torch; a benchmark engine's flags are loaded only when that engine
is named), and the thread settings (:mod:`mgdm_audio.core.threads`) are made before torch is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mgdm_audio import __version__
from mgdm_audio.core.errors import InternalError, UserInputError
from mgdm_audio.core.runtime import keep_freed_memory
from mgdm_audio.core.threads import configure as configure_threads

DEBUG_ENV = "MGDM_AUDIO_DEBUG"
"""Set to 1 to see the traceback of an internal error (as ``--debug`` does)."""
#: ``--segment`` below this is refused (the cost per second of audio grows as the chunks shrink)
MIN_SEGMENT_SECONDS = 0.5


def _benchmark(args: argparse.Namespace) -> int:
    """Any registered engine: run it, write its JSON / Markdown / plot with the regenerating command, print."""
    from mgdm_audio.benchmarks import load_engine
    from mgdm_audio.benchmarks.harness import git_state, write_outputs

    code = git_state()  # the code the numbers come from: the checkout may change while the run goes on
    report = load_engine(args.suite).run(args)
    if report is None:  # a torchrun rank other than 0: rank 0 writes the outputs
        return 0
    write_outputs(report, args.json, args.markdown, args.plot, args.argv, git=code)
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
    from mgdm_audio.audio.discriminative import available_separators
    from mgdm_audio.audio.priors import available_priors
    from mgdm_audio.image.operators import TASKS
    from mgdm_audio.image.priors import available_image_priors

    print(f"shipped audio priors: {', '.join(available_priors()) or 'none'}")
    print(f"shipped separators: {', '.join(available_separators()) or 'none'}")
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
    from mgdm_audio.audio.io import write_audio
    from mgdm_audio.audio.priors import generate, load_prior
    from mgdm_audio.core.atomic import created_folders, remove_empty_folders
    from mgdm_audio.core.outputs import refuse_existing

    if args.num_samples < 1:
        raise UserInputError(f"--num-samples must be at least 1, got {args.num_samples}.")
    prior = load_prior(args.model, device=args.device)
    out = Path(args.out)
    targets = [[out / f"sample_{k}" / f"{name}.wav" for name in [*prior.stems, "mix"]] for k in range(args.num_samples)]
    refuse_existing([t for sample in targets for t in sample], args.force)  # before any work
    made = created_folders(out / "sample_0")
    samples = generate(prior, args.num_samples, args.seconds, args.seed, steps=args.steps, eta=args.eta)
    written: list[Path] = []
    try:
        for stems, paths in zip(samples, targets, strict=True):
            for wav, path in zip([*stems, stems.sum(0)], paths, strict=True):
                write_audio(path, wav.unsqueeze(0), prior.sample_rate, subtype="FLOAT")
                written.append(path)
    except BaseException:  # all samples or none
        for path in written:
            path.unlink(missing_ok=True)
        remove_empty_folders(made + [t[0].parent for t in targets])
        raise
    print(f"wrote {len(samples)} sample(s) of {args.seconds:g} s ({', '.join(prior.stems)} + mix) to {out}")
    return 0


def _separate(args: argparse.Namespace) -> int:
    from mgdm_audio.audio.separate_files import OutputOptions, expand_inputs, separate_files
    from mgdm_audio.audio.separator import Separator
    from mgdm_audio.benchmarks.harness import device_for_rank, torchrun_shard

    files = expand_inputs(args.files, recursive=args.recursive)
    if not 0 < args.overlap < 0.5:
        raise UserInputError(f"--overlap must be a fraction in (0, 0.5), got {args.overlap}.")
    if args.n_samples < 1:
        raise UserInputError(f"--n-samples must be at least 1, got {args.n_samples}.")
    if args.segment is not None and not args.segment >= MIN_SEGMENT_SECONDS:
        raise UserInputError(
            f"--segment must be at least {MIN_SEGMENT_SECONDS:g} seconds (shorter chunks give the prior too little "
            f"context and multiply the cost per second of audio), got {args.segment:g}."
        )
    if not 8 <= args.mp3_bitrate <= 320:
        raise UserInputError(f"--mp3-bitrate must be between 8 and 320 kbit/s, got {args.mp3_bitrate}.")
    fmt = "mp3" if args.mp3 else "flac" if args.flac else "wav"
    subtype = "FLOAT" if args.float32 else "PCM_24" if args.int24 else "PCM_16" if args.prior_rate_mono else None
    if fmt == "flac" and subtype == "FLOAT":
        raise UserInputError("FLAC stores integers only: use --int24 (or WAV with --float32).")
    shard = torchrun_shard(args.out)  # torchrun: tracks dealt to the ranks; the output folder records what is done
    bar = None
    show = not args.no_progress and not args.json and shard.rank == 0
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
        device=device_for_rank(args.device, shard),
        chunk_seconds=args.segment,
        overlap=args.overlap,
        batch_chunks=args.batch_chunks,
        n_samples=args.n_samples,
        seed=args.seed,
        callback=progress,
        output="prior" if args.prior_rate_mono else "input",
        init=args.init,
        init_sigma=args.init_sigma,
        bf16=args.bf16,
    )
    options = OutputOptions(
        fmt,
        subtype,
        args.two_stems,
        args.skip_existing,
        args.force,
        args.plot,
        clip_mode=args.clip_mode,
        mp3_bitrate=args.mp3_bitrate,
        filename=args.filename,
    )
    try:
        summaries = separate_files(
            files, Path(args.out), separator, options, on_track=on_track, rank=shard.rank, world=shard.world,
            barrier=shard.barrier,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()  # ends its line: an error printed after it stands on a line of its own
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
    from mgdm_audio.image.restore import preset_label, restore

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
        flags = ("task", "prior", "sampler", "preset", "n_samples", "degrade", "seed", "sigma_y", "device", "force")
        options = {name: getattr(args, name) for name in (*flags, "kernel_wizard")}
        summary = restore(args.image, args.out, callback=progress, note=note, **options)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        scored = summary["psnr"] is not None and summary["ssim"] is not None
        score = f", PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.3f}" if scored else ""
        print(
            f"{summary['task']}: {summary['sampler']} ({preset_label(summary['preset'], summary['sampler_preset'])}), "
            f"K={summary['n_samples']}, "
            f"{summary['nfe']} NFE, {summary['vjp']} VJP, {summary['seconds']:.1f} s{score} -> "
            f"{', '.join(summary['outputs'])}"
        )
    return 0


def _add_convert(sub: Any) -> None:
    """``convert msdm CKPT -o DIR`` / ``convert isdm CKPT x4 -o DIR``: published MSDM checkpoints into the project's
    export (no code from the files runs)."""
    conv = sub.add_parser("convert", help="convert a published checkpoint into a prior export folder")
    kinds = conv.add_subparsers(dest="kind", required=True)
    m = kinds.add_parser(
        "msdm", help="MSDM's Lightning .ckpt or a whole pickled MSDM Model (audio-diffusion-pytorch 0.0.43)"
    )
    m.add_argument("checkpoint", type=Path, help="the .ckpt (Lightning) or the pickled Model file")
    i = kinds.add_parser("isdm", help="MSDM's four single-stem (weakly supervised) checkpoints as one product prior")
    i.add_argument("checkpoints", type=Path, nargs="+", help="one checkpoint per stem, in --stems order")
    for p in (m, i):
        p.add_argument("-o", "--out", type=Path, required=True, help="export folder to write (for separate -n DIR)")
        p.add_argument(
            "--architecture", default="published", help="published (default), tiny, or a JSON of UNet1d kwargs"
        )
        p.add_argument("--stems", default="bass,drums,guitar,piano", help="stem names in channel order")
        p.add_argument("--name", help="prior name in run records (default: the checkpoint's file stem)")

    def run(args: argparse.Namespace) -> int:
        from mgdm_audio.audio.msdm_convert import ExportOptions, convert_isdm, convert_msdm

        stems = tuple(s.strip() for s in args.stems.split(",") if s.strip())
        options = ExportOptions(args.architecture, stems, name=args.name)
        if args.kind == "isdm":
            config = convert_isdm(args.checkpoints, args.out, options)
        else:
            config = convert_msdm(args.checkpoint, args.out, options)
        src = config["converted_from"]
        print(f"{args.out}: {config['parameters']:,} parameters from {src['file']} (sha256 {src['sha256']})")
        return 0

    conv.set_defaults(func=run)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (unless the help already says it, or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default:" in text
            or "(default" in text
            or any(action.default is v for v in (None, False, True, argparse.SUPPRESS))
            or (not action.option_strings and action.nargs not in ("?", "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


def _add_threads(p: argparse.ArgumentParser) -> None:
    from mgdm_audio.core.threads import THREADS_HELP

    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)


def _add_posterior_arguments(
    p: argparse.ArgumentParser, *, sampler_help: str, samples_help: str, seed_help: str, device_help: str
) -> None:
    """``--sampler``, ``--preset``, ``--n-samples``, ``--seed`` and ``--device``: how ``separate`` and ``restore``
    run a posterior sampler (same names and defaults; the help says what each means for the command)."""
    p.add_argument("--sampler", default="mgdm", help=sampler_help)
    p.add_argument(
        "--preset",
        default="default",
        help="fast | default | paper | tuned (audio: chosen on validation), or one of the sampler's presets",
    )
    p.add_argument("--n-samples", type=int, default=1, help=samples_help)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("-d", "--device", default="auto", help=device_help)


def _add_run_flags(p: argparse.ArgumentParser, json_help: str) -> None:
    """``--force``, ``--json``, ``--threads`` and ``--no-progress`` of the commands that write outputs of a run."""
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--json", action="store_true", help=json_help)
    _add_threads(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_benchmark_engines(bench_sub: argparse._SubParsersAction, argv: Sequence[str]) -> None:
    """One subcommand per registered engine; only the engine named on the command line is imported (for its flags),
    so that ``--help`` loads no torch."""
    from mgdm_audio.benchmarks import ENGINES, load_engine

    words = [a for a in argv if not a.startswith("-")]
    chosen = words[1] if len(words) > 1 and words[0] == "benchmark" else None
    for name, (_, help_line) in ENGINES.items():
        engine_parser = bench_sub.add_parser(name, help=help_line)
        engine_parser.set_defaults(func=_benchmark)
        if name == chosen:
            from mgdm_audio.benchmarks.harness import add_output_arguments

            engine = load_engine(name)
            engine.add_arguments(engine_parser)
            add_output_arguments(engine_parser, engine.PLOT)


class _SubParser(argparse.ArgumentParser):
    """Subcommand parsers show their defaults too (:class:`HelpFormatter`)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line; ``argv`` (default: ``sys.argv[1:]``) only decides which benchmark engine's flags load."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="mgdm-audio", description="Posterior sampling with diffusion priors.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error (a bug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubParser)
    bench = sub.add_parser("benchmark", help="run a benchmark suite")
    bench_sub = bench.add_subparsers(dest="suite", required=True, parser_class=_SubParser)
    _add_benchmark_engines(bench_sub, argv)
    data = sub.add_parser("make-dataset", help="render a Slakh-style 4-stem dataset (bass, drums, guitar, piano)")
    data.add_argument("kind", nargs="?", default="slakh-style", choices=["slakh-style"], help="dataset kind")
    data.add_argument("-o", "--out", required=True, metavar="OUT", help="tracks go to OUT/SPLIT/TrackNNNNN")
    data.add_argument("--recipe", metavar="PATH", help="render every split of a recipe YAML (recipes/data/*.yaml)")
    data.add_argument("--split", default="train", help="split folder name (test*: held-out chorale titles)")
    data.add_argument("--tracks", type=int, default=10, help="tracks to render (without --recipe)")
    data.add_argument("--seconds", type=float, default=30.0, help="track length (chorales: at most)")
    data.add_argument("--seed", type=int, default=0, help="track i uses seed + i")
    data.add_argument(
        "--soundfont",
        metavar="PATH",
        help="SF2 file (default: FluidR3_GM; TimGM6mb and the Csound GM bank are reserved)",
    )
    data.add_argument("--renderer", choices=["auto", "fluidsynth", "tinysoundfont"], help="default: auto")
    data.add_argument("--source", default="procedural", help="procedural, chorales or corpus (recipes: also mixed)")
    data.add_argument("--sample-rate", type=int, help="Hz (default 22050, or the recipe's)")
    data.add_argument("--workers", type=int, default=1, help="processes, one synthesiser each")
    data.add_argument(
        "--skip-existing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep complete tracks (those with metadata.json)",
    )
    _add_threads(data)
    data.add_argument("--no-progress", action="store_true", help="no progress bar")
    data.set_defaults(func=_make_dataset)
    train = sub.add_parser("train", help="train a diffusion prior from a recipe (DDP: torchrun -m mgdm_audio.training)")
    from mgdm_audio.training.__main__ import add_train_arguments

    add_train_arguments(train)
    _add_threads(train)
    train.set_defaults(func=_train)
    gen = sub.add_parser("generate", help="unconditional multi-stem samples from a prior")
    gen.add_argument("-n", "--model", required=True, help="shipped prior name or export folder")
    gen.add_argument("--seconds", type=float, default=4.0, help="length of each sample")
    gen.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same samples)")
    gen.add_argument("--steps", type=int, default=50, help="DDIM steps on the prior's noise-level table")
    gen.add_argument(
        "--eta", type=float, default=0.0, help="DDIM eta (0: deterministic, the default; 1: ancestral, noisier here)"
    )
    gen.add_argument("--num-samples", type=int, default=1, help="how many samples (OUT/sample_K/)")
    gen.add_argument("--device", default="cpu", help="cpu | cuda")
    _add_threads(gen)
    gen.add_argument("-o", "--out", required=True, help="output folder (OUT/sample_K/STEM.wav and mix.wav)")
    gen.add_argument("--force", action="store_true", help="overwrite existing outputs")
    gen.set_defaults(func=_generate)
    sep = sub.add_parser("separate", help="separate mixture files into stems (the main job)")
    sep.add_argument(
        "files",
        nargs="+",
        help="audio files or folders of them (wav, flac, mp3, ogg, m4a, ...: what FFmpeg reads)",
    )
    sep.add_argument("-r", "--recursive", action="store_true", help="also search the subfolders of folder inputs")
    sep.add_argument("-n", "--name", default="slakh-style-small", help="prior: a shipped name or an export folder")
    sep.add_argument("-o", "--out", default="separated", help="output root: OUT/PRIOR/TRACK/STEM.wav")
    sep.add_argument(
        "--filename",
        default="{track}/{stem}.{ext}",
        help="output file names under OUT/PRIOR, a template of {track} (the input's name; inputs with the same name "
        "get distinct ones, e.g. a_song and b_song), {trackext} (the input's extension), {stem} and {ext}",
    )
    _add_posterior_arguments(
        sep,
        sampler_help="posterior sampler (see `mgdm-audio info`), or demucs: the --init separator",
        samples_help="posterior samples per track (mean + spread)",
        seed_help="sampler seed (the same seed gives the same stems)",
        device_help="auto | cpu | cuda (under torchrun: cuda:LOCAL_RANK)",
    )
    sep.add_argument(
        "--init",
        default=None,
        help="discriminative separator (export folder or name) for warm starts; --sampler demucs without it runs "
        "the shipped slakh-diverse-htdemucs-small",
    )
    sep.add_argument("--init-sigma", type=float, default=None, help="warm start: the --init estimate noised to this")
    sep.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast (GPUs)")
    sep.add_argument(
        "--segment",
        type=float,
        default=None,
        help=f"chunk length in seconds, at least {MIN_SEGMENT_SECONDS:g} (default: the prior's, rounded up to its "
        "length multiple)",
    )
    sep.add_argument("--overlap", type=float, default=0.25, help="overlap fraction between chunks, in (0, 0.5)")
    sep.add_argument("--batch-chunks", type=int, default=4, help="even chunks separated together (one network batch)")
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
    sep.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip finished tracks (stems and run.json written; a track cut short is redone): how a killed run resumes",
    )
    sep.add_argument("--plot", action="store_true", help="write separation.png (spectrograms, spread)")
    _add_run_flags(sep, json_help="print the run summaries as JSON")
    sep.set_defaults(func=_separate)
    from mgdm_audio.image.tasks import INPUT_RULES, KERNEL_WIZARD_HELP, TASKS

    rs = sub.add_parser(
        "restore", help="restore an image (ten tasks) with an image prior and a posterior sampler", epilog=INPUT_RULES
    )
    rs.add_argument("image", help="image file (PNG, JPEG, ...) or .npy array; see the input rules below")
    rs.add_argument("--task", required=True, help="one of: " + ", ".join(TASKS))
    rs.add_argument(
        "--prior",
        default="fashion-mnist-pixel",
        help="image prior: a shipped name (fashion-mnist-pixel, fashion-mnist-latent) or an export folder",
    )
    _add_posterior_arguments(
        rs,
        sampler_help="posterior sampler (see `mgdm-audio info`)",
        samples_help="posterior samples K (K > 1: mean and spread panels)",
        seed_help="sampler seed (the measurement noise uses seed + 1000003)",
        device_help="auto | cpu | cuda",
    )
    rs.add_argument("--degrade", action="store_true", help="IMAGE is clean: make the measurement from it")
    rs.add_argument("--sigma-y", type=float, default=0.05, help="measurement noise std on [-1, 1] images")
    rs.add_argument(
        "-o", "--out", required=True, metavar="OUT.png", help="the restored image; OUT_figure.png is the figure"
    )
    _add_run_flags(rs, json_help="print the run summary as JSON")
    rs.add_argument("--kernel-wizard", metavar="WEIGHTS", help=KERNEL_WIZARD_HELP)
    rs.set_defaults(func=_restore)

    _add_convert(sub)
    info = sub.add_parser("info", help="list samplers, their presets and requirements")
    info.set_defaults(func=_info)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread: every clean-up path of SIGINT (Ctrl-C) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def handle_termination() -> None:
    """SIGTERM and SIGHUP raise :class:`Terminated` (main thread only; a signal the user ignores stays ignored)."""
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command that regenerates an output
    keep_freed_memory()  # large temporaries are reused instead of re-faulted on every sampler step (core/runtime.py)
    handle_termination()
    try:
        threads = getattr(args, "threads", None)
        if threads is not None and threads < 0:
            raise UserInputError(f"--threads must be 0 (automatic) or a positive count, got {threads}.")
        configure_threads(threads)  # before torch is imported (core/threads.py)
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
    except Terminated as stop:
        print(f"mgdm-audio: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("mgdm-audio: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mgdm-audio info | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
