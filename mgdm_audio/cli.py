"""The ``mgdm-audio`` command line (floor 4: parse flags, call one function, print).

    mgdm-audio benchmark gmm [--quick] [--json PATH] [--markdown PATH] [--plot PNG] [--samplers a,b] [--no-scaling]
    mgdm-audio info

A user mistake prints one sentence on stderr and exits with status 2; outputs are written to a
temporary name and renamed, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mgdm_audio import __version__
from mgdm_audio.core.errors import UserInputError


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    payload, text = gmm.run_benchmark(
        gmm.QUICK if args.quick else gmm.FULL,
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
    g.add_argument("--cache", metavar="PATH", help="JSON-lines cache of finished runs; a killed run resumes")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=_benchmark_gmm)
    info = sub.add_parser("info", help="list samplers, their presets and requirements")
    info.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
