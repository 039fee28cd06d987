"""A mixture to separate, probed once: header facts, the exact frame count and the RMS of its mid channel.

:func:`probe_file` decodes the file once in blocks (so a truncated file, NaN samples or a bad header raise one
:class:`~mgdm_audio.core.errors.UserInputError` before any separation starts) and keeps what the separation needs:
the rate, the channels, the counted frames, the bit depth to write back, and ``rms = sqrt(mean(m^2))`` of the mid
``m = mean over channels`` for the input gain. :attr:`MixtureSource.blocks` then streams the file a second and last
time, block by block, at its own rate and channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from mgdm_audio.audio.io import audio_info, iter_blocks
from mgdm_audio.core.errors import UserInputError

MAX_CHANNELS = 2
BLOCK_SECONDS = 10.0


@dataclass(frozen=True)
class MixtureSource:
    """A mixture at ``sample_rate`` with ``channels`` channels and ``frames`` samples; ``blocks()`` yields ``(C, n)``
    float32 blocks. ``subtype`` is the file's sample format (``PCM_16``, ``PCM_24``, ``FLOAT``, ``LOSSY``, ...)."""

    name: str
    sample_rate: int
    channels: int
    frames: int
    rms: float
    subtype: str
    blocks: Callable[[], Iterator[Tensor]]

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def probe_file(path: str | Path, block_seconds: float = BLOCK_SECONDS) -> MixtureSource:
    """Check and measure ``path`` in one decoding pass (see the module docstring)."""
    path = Path(path)
    info = audio_info(path)
    if info.channels > MAX_CHANNELS:
        raise UserInputError(f"{path} has {info.channels} channels; only mono and stereo mixtures are supported.")
    block = max(1, int(block_seconds * info.sample_rate))

    def blocks() -> Iterator[Tensor]:
        return iter_blocks(path, block, max_channels=MAX_CHANNELS)

    frames, sum_sq = 0, 0.0
    for b in blocks():
        frames += b.shape[-1]
        sum_sq += float(b.double().mean(0).pow(2).sum())
    if frames == 0:
        raise UserInputError(f"{path} contains no audio (zero samples).")
    return MixtureSource(
        path.name, info.sample_rate, info.channels, frames, math.sqrt(sum_sq / frames), info.subtype, blocks
    )


def tensor_source(wav: Tensor, sample_rate: int, name: str = "tensor") -> MixtureSource:
    """A mixture ``(T,)`` or ``(C, T)`` (C = 1 or 2) held in memory."""
    from torch import isfinite

    if not isinstance(wav, Tensor):
        raise UserInputError("the mixture must be a torch tensor of shape (T,) or (channels, T).")
    wav = wav[None] if wav.ndim == 1 else wav
    if wav.ndim != 2 or wav.shape[0] not in (1, 2):
        raise UserInputError(f"the mixture must be mono or stereo (1 or 2 channels), got shape {tuple(wav.shape)}.")
    if wav.shape[1] == 0:
        raise UserInputError("the mixture is empty (zero samples).")
    if not bool(isfinite(wav).all()):
        raise UserInputError("the mixture contains NaN or infinite samples.")
    if sample_rate <= 0:
        raise UserInputError(f"the sample rate must be positive, got {sample_rate}.")
    wav = wav.float()
    rms = float(wav.double().mean(0).pow(2).mean().sqrt())

    def blocks() -> Iterator[Tensor]:
        yield wav

    return MixtureSource(name, int(sample_rate), int(wav.shape[0]), int(wav.shape[1]), rms, "FLOAT", blocks)
