"""Training of VE denoisers (EDM): single process or DDP under torchrun, EMA, checkpoints, export.

    torchrun --nproc_per_node N -m mgdm_audio.training RECIPE.yaml [--out DIR] [--resume] ...
    mgdm-audio train RECIPE.yaml [--out DIR] [--resume] ...
    mgdm-audio train RECIPE.yaml --out DIR --export-only [--export DIR]   (snapshot of a run's checkpoint)

This floor knows no audio: the recipe names the model and dataset factories.
"""

from mgdm_audio.training.trainer import (
    FactorySpec,
    Recipe,
    TrainResult,
    TrainSettings,
    ValidationSettings,
    export_checkpoint,
    init_distributed,
    load_recipe,
    train,
)

__all__ = [
    "FactorySpec",
    "Recipe",
    "TrainResult",
    "TrainSettings",
    "ValidationSettings",
    "export_checkpoint",
    "init_distributed",
    "load_recipe",
    "train",
]
