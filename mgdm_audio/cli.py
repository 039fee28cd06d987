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

A user mistake prints one sentence on stderr and exits with status 2; outputs are written to a
temporary name and renamed, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mgdm_audio import __version__
from mgdm_audio.core.atomic import write_atomic
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.runtime import keep_freed_memory

KERNEL_WIZARD_HELP = (
    "bkse KernelWizard weights (GOPRO_wVAE.pth or .safetensors) for nonlinear_blur: the reference's blur network "
    "instead of the shipped stand-in (not downloadable here; bring your own)"
)


def _benchmark_gmm(args: argparse.Namespace) -> int:
    from mgdm_audio.benchmarks import gmm
    from mgdm_audio.samplers.registry import get_sampler

    samplers = None
    if args.samplers:
        samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
        for name in samplers:
            get_sampler(name)  # one clear error for an unknown name, before any work
    if args.workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {args.workers}.")
    if not 0 <= args.seed_base < 2**62:
        raise UserInputError(f"--seed-base must be an integer in [0, 2**62), got {args.seed_base}.")
    payload, text = gmm.run_benchmark(
        dataclasses.replace(gmm.QUICK if args.quick else gmm.FULL, seed_base=args.seed_base),
        samplers=samplers,
        scaling=not args.no_scaling,
        cache=Path(args.cache) if args.cache else None,
        workers=args.workers,
        progress=not args.no_progress,
        label="quick" if args.quick else "full",
    )
    if args.json:
        write_atomic(Path(args.json), json.dumps(payload, indent=1) + "\n")
    if args.markdown:
        write_atomic(Path(args.markdown), text)
    if args.plot:
        gmm.plot_scaling(payload, Path(args.plot))
    print(text)
    return 0


def _benchmark_separation(args: argparse.Namespace) -> int:
    from mgdm_audio.benchmarks import separation as sepbench

    samplers = [s.strip() for s in (args.samplers or "").split(",") if s.strip()]
    runs = sepbench.make_runs(samplers, args.preset, args.sampler_set, oracles=not args.no_oracles)
    if not runs:
        raise UserInputError("nothing to run: give --samplers and/or --sampler-set (or drop --no-oracles).")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.bsseval:
        from mgdm_audio.metrics.bsseval import require_museval

        require_museval()
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    device, barrier = args.device, None
    if world > 1:  # torchrun: chunks dealt to the ranks (one GPU each), rank 0 merges and writes the outputs
        import torch
        import torch.distributed as dist

        if not args.cache:
            raise UserInputError("sharded runs (WORLD_SIZE > 1) need --cache PATH: the ranks merge results there.")
        if device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        barrier = dist.barrier
    setup = sepbench.prepare(
        args.root,
        args.layout,
        args.split,
        args.prior,
        runs,
        max_chunks=args.max_chunks,
        seed=args.seed,
        chunk_seconds=args.chunk_seconds,
        device=device,
    )
    rows = sepbench.run_benchmark(
        setup,
        cache=Path(args.cache) if args.cache else None,
        bsseval=args.bsseval,
        progress=not args.no_progress and rank == 0,
        rank=rank,
        world_size=world,
        barrier=barrier,
    )
    if rows is None:
        return 0
    payload = sepbench.payload(rows, setup.info)
    text = sepbench.markdown_report(payload["summary"], setup.info, setup.prior.stems)
    if args.json:
        write_atomic(Path(args.json), json.dumps(payload, indent=1) + "\n")
    if args.markdown:
        write_atomic(Path(args.markdown), text)
    if args.plot:
        sepbench.plot_quality_vs_nfe(payload["summary"], Path(args.plot))
    print(text)
    return 0


def _benchmark_image(args: argparse.Namespace) -> int:
    from mgdm_audio.benchmarks import image as imagebench
    from mgdm_audio.image.data import DEFAULT_ROOT

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    setup = imagebench.prepare(
        args.prior,
        tasks=args.tasks,
        samplers=args.samplers,
        preset=args.preset,
        n_images=args.n_images,
        seed=args.seed,
        batch=args.batch,
        data_root=args.data_root or DEFAULT_ROOT,
        device=args.device,
        split=args.split,
        kernel_wizard=args.kernel_wizard,
    )
    result = imagebench.run_benchmark(
        setup, cache_dir=Path(args.cache) if args.cache else None, progress=not args.no_progress
    )
    document = imagebench.payload(result.rows, setup.settings)
    text = imagebench.markdown_report(document)
    if args.json:
        write_atomic(Path(args.json), json.dumps(document, indent=1) + "\n")
    if args.markdown:
        write_atomic(Path(args.markdown), text)
    if args.plot:
        imagebench.plot_examples(setup, result, Path(args.plot))
    print(text)
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
            source=args.source,
            tracks=args.tracks,
            seconds=args.seconds,
            seed=args.seed,
            chorale_titles="held_out" if args.split.startswith("test") else "train",
            soundfont=args.soundfont,
            renderer=args.renderer or "auto",
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
    from mgdm_audio.audio.separate_files import OutputOptions, audio_seconds, expand_inputs, separate_files
    from mgdm_audio.audio.separator import Separator

    files = expand_inputs(args.files)
    if not 0 < args.overlap < 0.5:
        raise UserInputError(f"--overlap must be a fraction in (0, 0.5), got {args.overlap}.")
    if args.n_samples < 1:
        raise UserInputError(f"--n-samples must be at least 1, got {args.n_samples}.")
    if args.segment is not None and not args.segment > 0:
        raise UserInputError(f"--segment must be a positive number of seconds, got {args.segment}.")
    fmt = "mp3" if args.mp3 else "flac" if args.flac else "wav"
    subtype = "FLOAT" if args.float32 else "PCM_24" if args.int24 else "PCM_16"
    if fmt == "flac" and subtype == "FLOAT":
        raise UserInputError("FLAC stores integers only: use --int24 (or WAV with --float32).")
    if fmt == "mp3":
        subtype = "MPEG_LAYER_III"
    total = audio_seconds(files)
    bar = None
    if not args.no_progress and not args.json:
        from tqdm import tqdm

        bar = tqdm(
            total=round(total, 1),
            unit="s",
            desc="separating",
            bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s of audio [{elapsed}<{remaining}]",
        )
    done_before = [0.0]

    def progress(state: dict) -> None:
        if bar is not None:
            bar.n = round(done_before[0] + state["done_seconds"], 1)
            bar.refresh()

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
    )
    options = OutputOptions(fmt, subtype, args.two_stems, args.skip_existing, args.force, args.plot)

    def on_track(path: Path, i: int, n: int) -> None:
        if bar is not None and i > 0:
            done_before[0] = audio_seconds(files[:i])
        if bar is not None:
            bar.set_description(f"[{i + 1}/{n}] {path.name}")

    try:
        summaries = separate_files(files, Path(args.out), separator, options, on_track=on_track)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(summaries, indent=2, default=str))
    else:
        for s in summaries:
            if s.get("skipped"):
                print(f"{s['input']}: outputs exist in {s['output']}, skipped")
            else:
                print(
                    f"{s['input']} -> {Path(s['outputs'][0]).parent}  ({s['audio_seconds']:.1f} s of audio in "
                    f"{s['seconds']:.1f} s, real-time factor {s['real_time_factor']:.2f}, {s['nfe']} NFE)"
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
        summary = restore(
            args.image,
            args.out,
            task=args.task,
            prior=args.prior,
            sampler=args.sampler,
            preset=args.preset,
            n_samples=args.n_samples,
            degrade=args.degrade,
            seed=args.seed,
            sigma_y=args.sigma_y,
            device=args.device,
            callback=progress,
            note=note,
            kernel_wizard=args.kernel_wizard,
        )
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
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("benchmark", help="run a benchmark suite")
    bench_sub = bench.add_subparsers(dest="suite", required=True)
    g = bench_sub.add_parser("gmm", help="exact-posterior benchmark on a 25-component Gaussian mixture")
    g.add_argument("--quick", action="store_true", help="d in {8, 80}, d_y in {1, 2}, 5 problems, 1000 samples")
    g.add_argument("--json", metavar="PATH", help="write rows and summary as JSON")
    g.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    g.add_argument("--plot", metavar="PNG", help="plot SW against NFE (MGDM's sweeps and the other samplers)")
    g.add_argument("--samplers", metavar="A,B", help="only these samplers (registry names)")
    g.add_argument("--no-scaling", action="store_true", help="skip the MGDM Gibbs-sweep scaling run")
    g.add_argument(
        "--seed-base",
        type=int,
        default=0,
        help="seed base of the problems: 0 (default) the committed test problems, 500000 the validation problems the "
        "presets were tuned on; problem i of setting (d, d_y) uses seed base + 10007 d + 101 d_y + i, so a base far "
        "from both (e.g. 900000) gives new problems",
    )
    g.add_argument("--cache", metavar="PATH", help="JSON-lines cache of finished runs; a killed run resumes")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=_benchmark_gmm)
    bs = bench_sub.add_parser("separation", help="SI-SDRi (and BSSEval SDR) of samplers and oracles on test chunks")
    bs.add_argument("--root", required=True, help="dataset root holding the split folder")
    bs.add_argument("--layout", required=True, choices=["slakh", "musdb"], help="dataset layout")
    bs.add_argument("--split", default="test", help="split (slakh) or subset (musdb) folder name")
    bs.add_argument("--prior", default="slakh-style-small", help="shipped prior name or export folder")
    bs.add_argument("--samplers", default="mgdm,msdm,dps", metavar="A,B", help="registry samplers at --preset")
    bs.add_argument("--preset", default="fast", help="fast | default | paper, or a sampler preset")
    bs.add_argument(
        "--sampler-set",
        metavar="NAME=S:P:k=v,...",
        help="extra labelled runs, e.g. mgdm-R2=mgdm:fast:n_reps=2,dps-400=dps:fast:n_steps=400",
    )
    bs.add_argument(
        "--no-oracles", action="store_true", help="skip the irm / ibm / mixture oracles and the wiener baseline"
    )
    bs.add_argument("--max-chunks", type=int, default=None, help="first N chunks of the seeded order (default: all)")
    bs.add_argument("--seed", type=int, default=0, help="chunk order and per-chunk sampler seeds")
    bs.add_argument("--chunk-seconds", type=float, default=None, help="chunk length (default: the prior's)")
    bs.add_argument("--bsseval", action="store_true", help="also BSSEval v4 SDR via museval (needs ffmpeg)")
    bs.add_argument("--json", metavar="PATH", help="write {info, rows, summary} as JSON")
    bs.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    bs.add_argument("--plot", metavar="PNG", help="plot average SI-SDRi against NFE per chunk")
    bs.add_argument("--cache", metavar="PATH", help="JSON-lines cache of finished chunks; a killed run resumes")
    bs.add_argument("-d", "--device", default="auto", help="auto | cpu | cuda")
    bs.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    bs.add_argument("--no-progress", action="store_true")
    bs.set_defaults(func=_benchmark_separation)
    bi = bench_sub.add_parser("image", help="PSNR / SSIM of every sampler on the ten image tasks (Fashion-MNIST test)")
    bi.add_argument("--prior", default="fashion-mnist-pixel", help="shipped image prior name or export folder")
    bi.add_argument("--tasks", default="all", metavar="all|T1,T2", help="image tasks (default: all ten)")
    bi.add_argument(
        "--samplers",
        default="mgdm,dps,pigdm,diffpir,ddrm,reddiff,daps,vml_map",
        metavar="S[:PRESET[:k=v]],...",
        help="registry samplers, each optionally with its own preset and overrides (e.g. dps:paper)",
    )
    bi.add_argument("--preset", default="fast", help="fast | default | paper (or a sampler preset) for all samplers")
    bi.add_argument("--n-images", type=int, default=8, help="first N images of the seeded test permutation")
    bi.add_argument("--seed", type=int, default=0, help="image order, measurement noise and sampler seeds")
    bi.add_argument("--batch", type=int, default=None, help="images per sampler batch (default: all N at once)")
    bi.add_argument("--cache", metavar="DIR", help="one JSON per (task, sampler) with finished batches; resumes")
    bi.add_argument("--json", metavar="PATH", help="write {rows, summary, settings} as JSON")
    bi.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    bi.add_argument("--plot", metavar="PNG", help="grid of the first image per task: clean, measurement, samplers")
    bi.add_argument("--data-root", metavar="DIR", help="folder with the Fashion-MNIST IDX files (t10k-*)")
    bi.add_argument(
        "--split",
        default="test",
        choices=["test", "validation"],
        help="test: the held-out t10k images (reported results); validation: train images 55000..59999 (tuning)",
    )
    bi.add_argument("-d", "--device", default="auto", help="auto | cpu | cuda")
    bi.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    bi.add_argument("--no-progress", action="store_true")
    bi.add_argument("--kernel-wizard", metavar="WEIGHTS", help=KERNEL_WIZARD_HELP)
    bi.set_defaults(func=_benchmark_image)
    data = sub.add_parser("make-dataset", help="render a Slakh-style 4-stem dataset (bass, drums, guitar, piano)")
    data.add_argument("kind", nargs="?", default="slakh-style", choices=["slakh-style"])
    data.add_argument("-o", "--out", required=True, metavar="OUT", help="tracks go to OUT/SPLIT/TrackNNNNN")
    data.add_argument("--recipe", metavar="PATH", help="render every split of a recipe YAML (recipes/data/*.yaml)")
    data.add_argument("--split", default="train", help="split folder name (test*: held-out chorale titles)")
    data.add_argument("--tracks", type=int, default=10)
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
    sep.add_argument("files", nargs="+", help="audio files or folders of audio files (wav, flac, mp3, ogg)")
    sep.add_argument("-n", "--name", default="slakh-style-small", help="prior: a shipped name or an export folder")
    sep.add_argument("-o", "--out", default="separated", help="output root: OUT/PRIOR/TRACK/STEM.wav")
    sep.add_argument("--sampler", default="mgdm", help="posterior sampler (see `mgdm-audio info`)")
    sep.add_argument("--preset", default="default", help="fast | default | paper, or one of the sampler's presets")
    sep.add_argument("-d", "--device", default="auto", help="auto | cpu | cuda")
    sep.add_argument("--segment", type=float, default=None, help="chunk length in seconds (default: the prior's)")
    sep.add_argument("--overlap", type=float, default=0.25, help="overlap fraction between chunks, in (0, 0.5)")
    sep.add_argument("--batch-chunks", type=int, default=4, help="even chunks separated together (one network batch)")
    sep.add_argument("--n-samples", type=int, default=1, help="posterior samples per track (mean + spread)")
    sep.add_argument("--seed", type=int, default=0)
    enc = sep.add_mutually_exclusive_group()
    enc.add_argument("--mp3", action="store_true", help="write MP3")
    enc.add_argument("--flac", action="store_true", help="write FLAC")
    depth = sep.add_mutually_exclusive_group()
    depth.add_argument("--int24", action="store_true", help="24-bit integer samples")
    depth.add_argument("--float32", action="store_true", help="32-bit float WAV")
    sep.add_argument("--two-stems", default=None, metavar="STEM", help="write STEM and no_STEM only")
    sep.add_argument("--skip-existing", action="store_true", help="skip tracks whose outputs exist")
    sep.add_argument("--force", action="store_true", help="overwrite existing outputs")
    sep.add_argument("--plot", action="store_true", help="write separation.png (spectrograms, spread)")
    sep.add_argument("--json", action="store_true", help="print the run summaries as JSON")
    sep.add_argument("--no-progress", action="store_true")
    sep.set_defaults(func=_separate)
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
    keep_freed_memory()  # large temporaries are reused instead of re-faulted on every sampler step (core/runtime.py)
    try:
        return int(args.func(args))
    except UserInputError as err:
        print(f"mgdm-audio: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mgdm-audio: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mgdm-audio info | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
