"""Loading trained multi-stem priors: ``load_prior(name_or_path) -> AudioPrior`` (a core Denoiser).

A prior is an export folder written by the trainer (``mgdm_audio.training.export``): ``model.safetensors``
(EMA weights), ``config.json`` (architecture, EDM parameters, stems, sample rate, chunk length, hashes) and
``MODEL_CARD.md``. A name resolves to the package's ``mgdm_audio/audio/weights/<name>/``; anything else is
taken as a path to such a folder. Loading never unpickles (safetensors only) and needs no network.
A missing folder or file, a corrupt file, or weights that do not match the architecture (missing,
unexpected or mis-shaped tensors) raise one :class:`UserInputError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.audio.model import EDMPrior, prior_from_export_config
from mgdm_audio.audio.msdm_net import ISDMPrior, MSDMPrior
from mgdm_audio.core.atomic import file_sha256
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.schedules import NoiseLevels
from mgdm_audio.training.export import load_export, require_export, shipped_exports

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass
class AudioPrior:
    """A loaded prior: ``prior(x, sigma)`` is ``D(x, sigma)`` on ``(B, S, T)`` (the core Denoiser protocol)."""

    module: EDMPrior | MSDMPrior | ISDMPrior
    stems: tuple[str, ...]
    sample_rate: int
    chunk_samples: int
    config: dict[str, Any]
    weights_sha256: str
    path: Path

    @property
    def levels(self) -> NoiseLevels:
        return self.module.levels

    @property
    def downsampling(self) -> int:
        """Input lengths must be a multiple of this many samples."""
        return self.module.unet_config.downsampling

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return self.module(x, sigma)

    def to(self, device: torch.device | str) -> AudioPrior:
        self.module.to(device)
        return self


def display_name(prior: Any) -> str:
    """The name a prior goes by in output folders and reports: its config's ``name``, else its folder's name."""
    return str(prior.config.get("name", Path(str(getattr(prior, "path", "prior"))).name))


def available_priors() -> list[str]:
    """Names of the priors shipped inside the package."""
    return shipped_exports(WEIGHTS_DIR)


def resolve_prior_dir(name_or_path: str | Path) -> Path:
    expected = f"an export folder with {CONFIG_NAME} and {WEIGHTS_NAME}"
    return require_export(name_or_path, WEIGHTS_DIR, "prior", expected)


def prior_weights_sha256(name_or_path: str | Path) -> str:
    """The SHA-256 of a prior's weights file, as :func:`load_prior` records it, without building the network (for a
    script whose runs load the prior in other processes)."""
    return file_sha256(resolve_prior_dir(name_or_path) / WEIGHTS_NAME)


def load_prior(name_or_path: str | Path, device: torch.device | str = "cpu", bf16: bool = False) -> AudioPrior:
    """Load a shipped prior by name or an export folder by path, in eval mode on ``device``; ``bf16`` runs the
    network under bf16 autocast (:attr:`~mgdm_audio.core.edm.EDMPreconditioned.autocast_bf16`)."""
    folder = resolve_prior_dir(name_or_path)
    module, config, sha256 = load_export(folder, lambda c: prior_from_export_config(c["model"]["architecture"]))
    try:
        metadata = config.get("metadata", {})
        stems = tuple(str(s) for s in metadata["stems"])
        sample_rate, chunk_samples = int(metadata["sample_rate"]), int(metadata["chunk_samples"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserInputError(
            f"{folder / CONFIG_NAME} lacks the audio metadata ({type(err).__name__}: {err})."
        ) from None
    assert isinstance(module, EDMPrior | MSDMPrior | ISDMPrior)
    module.autocast_bf16 = bool(bf16)
    if len(stems) != module.unet_config.stems:
        raise UserInputError(
            f"{folder / CONFIG_NAME} lists {len(stems)} stems but the model has {module.unet_config.stems}."
        )
    prior = AudioPrior(
        module=module,
        stems=stems,
        sample_rate=sample_rate,
        chunk_samples=chunk_samples,
        config=config,
        weights_sha256=sha256,
        path=folder,
    )
    return prior.to(device)


def generate(prior: AudioPrior, n_samples: int, seconds: float, seed: int, steps: int = 50, eta: float = 0.0) -> Tensor:
    """Unconditional multi-stem samples ``(n_samples, S, round(seconds * sample_rate))`` (MSDM's total generation).

    Runs the core's DDIM(eta) sampler (VP start ``sqrt(1 - abar_T) n``, ``steps`` grid points of the prior's
    table) on a length rounded up to the prior's downsampling multiple, then crops. Same seed, same output.

    ``eta = 0`` (default) is the deterministic DDIM, a discretised probability-flow ODE; ``eta = 1`` the ancestral
    sampler, which re-injects fresh noise at every step and so relies on the denoiser to remove it again at the
    small levels. The shipped CPU prior does that poorly (below ``sigma = e^-6`` its loss is 0.8-0.9 of the untrained
    skip path's, ``evaluation/results/prior_diagnosis.md``), so with ``eta = 1`` its samples keep a noise floor and
    lose guitar and piano: the prior report recognises 85 % of its generated stems with ``eta = 0`` and 66 % with
    ``eta = 1`` on the same seeds (the previous release, on validation seeds 100 and 200: 84-86 % against 58-61 %),
    as EDM (Karras et al. 2022, section 4) observed for stochastic steps with imperfect denoisers.
    """
    from mgdm_audio.core.rng import make_generator
    from mgdm_audio.samplers.run import RunSpec, resolve, run_posterior

    if n_samples < 1:
        raise UserInputError(f"the number of samples must be at least 1, got {n_samples}.")
    if not seconds > 0:
        raise UserInputError(f"--seconds must be positive, got {seconds}.")
    length = round(seconds * prior.sample_rate)
    padded = -(-length // prior.downsampling) * prior.downsampling
    run = resolve(RunSpec("ddim", "paper-audio", (("eta", eta), ("n_steps", steps))), "audio")
    tensors = [*prior.module.parameters(), *prior.module.buffers()]  # a network-free prior has buffers only
    device = tensors[0].device if tensors else torch.device("cpu")
    shape = (len(prior.stems), padded)
    generator, noise = make_generator(seed + 1, device), make_generator(seed)
    result = run_posterior(prior, None, run, n_samples, generator, x_shape=shape, device=device, init=noise)
    return result.samples[..., :length].float().cpu()
