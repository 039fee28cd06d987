"""Training of VE denoisers (EDM): single process or DDP under torchrun, EMA, checkpoints, export.

    torchrun --nproc_per_node N -m mgdm_audio.training RECIPE.yaml [--out DIR] [--resume] ...
    mgdm-audio train RECIPE.yaml [--out DIR] [--resume] ...
    mgdm-audio train RECIPE.yaml --out DIR --export-only [--export DIR]   (snapshot of a run's checkpoint)

This floor knows no audio: the recipe names the model and dataset factories. The names below are imported on first
use (:mod:`mgdm_audio.lazy`), so that the command line builds its ``train`` flags without loading torch.
"""

from mgdm_audio.lazy import lazy_attributes

_NAMES = ("FactorySpec", "Recipe", "TrainResult", "TrainSettings", "ValidationSettings", "export_checkpoint")
_NAMES += ("init_distributed", "load_recipe", "train")
__getattr__ = lazy_attributes(__name__, dict.fromkeys(_NAMES, "trainer"))
__all__ = list(_NAMES)
