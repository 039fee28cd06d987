"""Training checkpoints: written atomically, read back without unpickling arbitrary objects.

A checkpoint is one ``torch.save`` file of plain containers and tensors (model, EMA, optimiser state, step,
data position, RNG states) written to a temporary name in the run folder and renamed, so a kill at any time
leaves either the previous or the new checkpoint. It is read with ``torch.load(weights_only=True)``, which
refuses anything but tensors and primitive containers. Exported weights use safetensors (``export.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mgdm_audio.core.atomic import publish, temp_sibling
from mgdm_audio.core.errors import UserInputError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to a temporary file beside ``path``, then a rename (:mod:`mgdm_audio.core.atomic`)."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        torch.save(state, tmp)
        publish(tmp, path)  # the usual file mode (umask), not mkstemp's 0600
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint` (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"no checkpoint at {path}; start without --resume or point --out at the run folder.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file
        raise UserInputError(
            f"checkpoint {path} cannot be read ({type(err).__name__}); delete it or restore a copy."
        ) from None
