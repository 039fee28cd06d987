"""``python -m mgdm_audio.training RECIPE.yaml`` (also under ``torchrun --nproc_per_node N``).

``--export-only`` writes the export folder from the run folder's current ``checkpoint.pt`` (read-only, e.g. a
snapshot of a training that is still running) and trains nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mgdm_audio.core.errors import UserInputError


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The flags shared by ``mgdm-audio train`` and ``python -m mgdm_audio.training``."""
    p.add_argument("recipe", help="training recipe YAML (e.g. recipes/prior/slakh-style-small.yaml)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many optimiser steps in total (default: the recipe's training.max_steps)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget of this invocation (default: the recipe's training.max_minutes, else none)",
    )
    p.add_argument("--data-root", default=None, help="replace the recipe's data root folder (default: the recipe's)")
    p.add_argument("--export", default=None, help="export folder (default: <out>/export)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--export-only",
        action="store_true",
        help="export <out>/checkpoint.pt (EMA weights, config.json, MODEL_CARD.md) without training; "
        "safe while that run is still training",
    )


@contextmanager
def _nothing_left_without_checkpoint(out: Path) -> Iterator[None]:
    """A run that fails (or is stopped) before its first checkpoint leaves nothing behind: the log it started and
    the folders it made are removed. Files that were there before are kept."""
    from mgdm_audio.core.atomic import created_folders, remove_empty_folders
    from mgdm_audio.training.checkpoint import CHECKPOINT_NAME
    from mgdm_audio.training.trainer import LOG_NAME

    made = created_folders(out)
    new_log = not (out / LOG_NAME).exists()
    try:
        yield
    except BaseException:
        if not (out / CHECKPOINT_NAME).exists():
            if new_log:
                (out / LOG_NAME).unlink(missing_ok=True)
            remove_empty_folders(made)
        raise


def run_from_args(args: argparse.Namespace) -> int:
    from mgdm_audio.training.trainer import export_checkpoint, init_distributed, load_recipe, train

    if args.max_steps is not None and args.max_steps < 0:
        raise UserInputError(f"--max-steps must be >= 0, got {args.max_steps}.")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise UserInputError(f"--max-minutes must be > 0, got {args.max_minutes}.")
    recipe = load_recipe(args.recipe, data_root=args.data_root)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    if getattr(args, "export_only", False):
        if args.resume or args.max_steps is not None or args.max_minutes is not None:
            raise UserInputError("--export-only trains nothing: drop --resume, --max-steps and --max-minutes.")
        exported, step = export_checkpoint(recipe, out, args.export)
        print(f"exported the checkpoint of {out} at step {step} to {exported}")
        return 0
    info = init_distributed()
    with _nothing_left_without_checkpoint(out):
        result = train(
            recipe,
            out,
            resume=args.resume,
            max_steps=args.max_steps,
            max_minutes=args.max_minutes,
            export_dir=args.export,
            progress=not args.no_progress,
        )
    if info.rank == 0:
        last = f"{result.losses[-1][1]:.5f}" if result.losses else "n/a"
        print(f"trained {result.step} steps ({result.stopped_by}); last loss {last}; exported to {result.export_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgdm_audio.training", description=__doc__)
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
