r"""Validation loss per noise band of an exported prior on a training recipe's validation set (the trainer's
``Validator``: the same items, sigmas and noise as the run's ``log.jsonl``), e.g. a warm start's step-0 baseline.

    python evaluation/prior/band_loss.py recipes/prior/slakh-diverse-small.yaml \
        mgdm_audio/audio/weights/slakh-style-small
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mgdm_audio.training.export import load_initial_weights
from mgdm_audio.training.trainer import Validator, load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("export", help="an export folder (model.safetensors + config.json)")
    parser.add_argument("--split", default=None, help="replace the validation split")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    if args.split:
        recipe.validation.data.kwargs["split"] = args.split
    model = recipe.model.build()
    load_initial_weights(model, Path(args.export))
    model.eval()
    validator = Validator(recipe.validation.data.build(), recipe.validation, torch.device("cpu"))
    result = validator(model)
    print(json.dumps({"export": args.export, "split": recipe.validation.data.kwargs["split"], **result}))


if __name__ == "__main__":
    main()
