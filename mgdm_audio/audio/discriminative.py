r"""A discriminative separator: the ``demucs`` package's Hybrid Transformer Demucs (Rouard, Massa and Défossez 2023,
"Hybrid Transformers for Music Source Separation"; facebookresearch/demucs, ``demucs/htdemucs.py``) trained here on
the project's data.

The network maps a mono mixture ``y`` of shape ``(B, 1, T)`` to stems ``\hat x = f_\theta(y)`` of shape ``(B, S, T)``
and is trained with the L1 waveform loss (Défossez et al. 2019, §5.1) on stems ``x`` whose mixture is their sum:

.. math::  L(\theta) = \frac{1}{B S T} \sum_{b, s, t} \big| f_\theta\big(\textstyle\sum_{s'} x_{b, s'}\big)_{s,t}
           - x_{b, s, t} \big|

(the trainer's ``objective: regression``, :mod:`mgdm_audio.training.trainer`). Its weights come from the same
export format as the priors (``model.safetensors``, ``config.json``, ``MODEL_CARD.md``); :func:`load_separator`
loads one by shipped name or folder. No pretrained weights are downloaded: the package supplies the model class only.
:func:`estimate` runs the network on chunks of any length (overlapping windows of its training length,
cross-faded), as the :class:`~mgdm_audio.audio.separator.Separator` streams its chunks through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.training.export import (
    SEPARATOR_FACTORY_SUFFIX,
    export_factory,
    load_export,
    require_export,
    shipped_exports,
)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FACTORY = f"mgdm_audio.audio.{SEPARATOR_FACTORY_SUFFIX}"
"""The model factory a separator export names (the suffix is how the weights listing tells separators from priors)."""

#: The CPU configuration (3.7 M parameters with 4 stems): 24 channels, 4 levels, 2 cross-domain transformer layers,
#: a 1024-point STFT (the package's default is 48 channels, 5 layers, 4096 points at 44.1 kHz).
SMALL: dict[str, Any] = {"channels": 24, "depth": 4, "t_layers": 2, "nfft": 1024}


class DemucsSeparator(nn.Module):
    """``forward(mix (B, 1, T)) -> stems (B, S, T)``: an HTDemucs of ``demucs==4.1.0`` on mono audio.

    In eval mode the network takes ``T <= chunk_samples`` (it pads to its training length and cannot reshape a longer
    input): longer mixtures go through :func:`estimate`."""

    def __init__(
        self, stems: list[str], sample_rate: int, chunk_samples: int, htdemucs: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        try:
            from demucs.htdemucs import HTDemucs
        except ImportError:
            raise UserInputError(
                "the discriminative separator needs the demucs package: pip install 'mgdm_audio[demucs]'."
            ) from None
        self.stems, self.sample_rate, self.chunk_samples = list(stems), int(sample_rate), int(chunk_samples)
        self.htdemucs = dict(SMALL if htdemucs is None else htdemucs)
        segment = Fraction(self.chunk_samples, self.sample_rate)  # exact: the network pads shorter inputs to it
        self.net = HTDemucs(
            sources=self.stems, audio_channels=1, samplerate=self.sample_rate, segment=segment, **self.htdemucs
        )

    def forward(self, mix: Tensor) -> Tensor:
        return self.net(mix)[:, :, 0]

    def export_config(self) -> dict[str, Any]:
        return {
            "stems": self.stems,
            "sample_rate": self.sample_rate,
            "chunk_samples": self.chunk_samples,
            "htdemucs": self.htdemucs,
        }


def build_separator(
    stems: list[str], sample_rate: int, chunk_samples: int, htdemucs: dict[str, Any] | None = None
) -> DemucsSeparator:
    """The recipe's model factory (``mgdm_audio.audio.discriminative:build_separator``)."""
    return DemucsSeparator(stems, sample_rate, chunk_samples, htdemucs)


@dataclass
class LoadedSeparator:
    """A loaded export: ``estimate(mix (B, 1, T))`` gives ``(B, S, T)``; the attributes the Separator reads from a
    prior (stems, rate, chunk length, config, weights hash, path)."""

    module: DemucsSeparator
    config: dict[str, Any]
    weights_sha256: str
    path: Path

    @property
    def stems(self) -> tuple[str, ...]:
        return tuple(self.module.stems)

    @property
    def sample_rate(self) -> int:
        return self.module.sample_rate

    @property
    def chunk_samples(self) -> int:
        return self.module.chunk_samples

    @property
    def downsampling(self) -> int:
        return 1

    def to(self, device: torch.device | str) -> LoadedSeparator:
        self.module.to(device)
        return self

    def estimate(self, mix: Tensor) -> Tensor:
        return estimate(self.module, mix)


def available_separators() -> list[str]:
    """Names of the discriminative separators shipped inside the package."""
    return shipped_exports(WEIGHTS_DIR, separators=True)


def load_separator(name_or_path: str | Path, device: torch.device | str = "cpu") -> LoadedSeparator:
    """Load a shipped separator by name or an export folder by path (eval mode, on ``device``)."""
    expected = "an export folder with config.json and model.safetensors"
    folder = require_export(name_or_path, WEIGHTS_DIR, "separator", expected)

    factory = export_factory(folder) or FACTORY  # anything unreadable is named by load_export
    if not factory.endswith(FACTORY):
        raise UserInputError(
            f"{folder} is not a discriminative separator (its model is {factory}); "
            "give a folder exported from a recipes/separator/ training."
        )
    module, config, sha256 = load_export(folder, lambda c: DemucsSeparator(**c["model"]["architecture"]))
    assert isinstance(module, DemucsSeparator)
    return LoadedSeparator(module, config, sha256, folder).to(device)


@torch.no_grad()
def estimate(model: DemucsSeparator, mix: Tensor, overlap: float = 0.25) -> Tensor:
    """``mix (B, 1, T)`` -> stems ``(B, S, T)``: windows of the training length ``L`` with hop ``(1 - overlap) L``,
    summed with triangular weights (normalised to 1 at every sample); ``T <= L`` is one call (padded inside)."""
    length, total = model.chunk_samples, mix.shape[-1]
    device = next(model.parameters()).device
    if total <= length:
        return model(mix.to(device)).to(mix)
    hop = max(1, int(length * (1 - overlap)))
    starts = list(range(0, total - length, hop)) + [total - length]
    ramp = torch.minimum(torch.arange(1, length + 1), torch.arange(length, 0, -1)).to(mix)
    out = mix.new_zeros(mix.shape[0], len(model.stems), total)
    weight = mix.new_zeros(total)
    for start in starts:
        out[..., start : start + length] += model(mix[..., start : start + length].to(device)).to(mix) * ramp
        weight[start : start + length] += ramp
    return out / weight
