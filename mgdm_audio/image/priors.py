r"""Image priors for restoration: ``load_image_prior(name_or_path) -> ImagePrior``.

An :class:`ImagePrior` is a core Denoiser in the space the sampler works in, plus, for latent priors, the
decoder. Samplers draw ``x`` of shape ``sample_shape``; :meth:`ImagePrior.to_image` maps it to an image in
``[-1, 1]`` (the decoder for latent priors, the identity otherwise), and :meth:`ImagePrior.problem` builds the
inverse problem with the likelihood composed with the decoder (as the MGDM reference
code: ``A_lat(z) = A(Dec(z))``, ``p(y | z) = N(y; A(Dec(z)), sigma_y^2 I)``).

Sources, tried in this order:

* a shipped name (``fashion-mnist-pixel``, ``fashion-mnist-latent``; folders in ``mgdm_audio/image/weights/``),
* an export folder of the trainer (``config.json`` + ``model.safetensors``): ``metadata.kind`` is ``pixel`` or
  ``latent`` (the latter names its autoencoder, a shipped name or a folder relative to the prior's folder),
* a diffusers ``UNet2DModel`` + scheduler folder (``mgdm_audio.image.adapters.load_diffusers_prior``).

Loading never unpickles (safetensors only) and needs no network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mgdm_audio.core.denoiser import Denoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import Operator
from mgdm_audio.core.schedules import NoiseLevels
from mgdm_audio.image.model import Autoencoder, EDMImagePrior, module_from_export_config
from mgdm_audio.training.export import CONFIG_NAME, load_export, require_export, shipped_exports

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PRIOR_KINDS = ("pixel", "latent")


class DecodedOperator(Operator):
    """``A_lat(z) = A(Dec(z))``: an image operator seen from a latent space (non-linear, differentiable)."""

    def __init__(self, operator: Operator, decoder: nn.Module) -> None:
        super().__init__()
        self.operator = operator
        self.decoder = decoder

    def forward(self, z: Tensor) -> Tensor:
        return self.operator(self.decoder(z))


@dataclass
class ImagePrior:
    """A loaded image prior: ``prior(x, sigma)`` is ``D(x, sigma)`` on ``(B, *sample_shape)``."""

    denoiser: Denoiser
    name: str
    kind: str
    image_shape: tuple[int, int, int]
    sample_shape: tuple[int, int, int]
    autoencoder: Autoencoder | None = None
    weights_sha256: str = ""
    path: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> NoiseLevels:
        return self.denoiser.levels

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return self.denoiser(x, sigma)

    def to_image(self, x: Tensor) -> Tensor:
        """Samples of the prior's space as images ``(B, C, H, W)`` in ``[-1, 1]``."""
        if self.autoencoder is not None:
            x = self.autoencoder.decode(x)
        return x.clamp(-1.0, 1.0)

    def problem(self, operator: Operator, y: Tensor, sigma_y: float) -> InverseProblem:
        """The inverse problem in the prior's space (the operator composed with the decoder if latent)."""
        if self.autoencoder is not None:
            operator = DecodedOperator(operator, self.autoencoder.decoder)
        return InverseProblem(operator, y, sigma_y)

    def to(self, device: torch.device | str) -> ImagePrior:
        for module in (self.denoiser, self.autoencoder):
            if isinstance(module, nn.Module):
                module.to(device)
        return self


def available_image_priors() -> list[str]:
    """Names of the image priors (and autoencoders) shipped inside the package."""
    return shipped_exports(WEIGHTS_DIR)


def _resolve(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    expected = f"an export folder with {CONFIG_NAME} or a diffusers UNet2DModel folder"
    return require_export(name_or_path, WEIGHTS_DIR, "image prior", expected, also_under=relative_to)


def _build(config: dict[str, Any]) -> nn.Module:
    return module_from_export_config(config["model"]["architecture"])


def load_autoencoder(name_or_path: str | Path, relative_to: Path | None = None) -> Autoencoder:
    """Load a trained :class:`Autoencoder` export (eval mode, no gradients)."""
    folder = _resolve(name_or_path, relative_to)
    module, _, _ = load_export(folder, _build)
    if not isinstance(module, Autoencoder):
        raise UserInputError(f"{folder} holds a {type(module).__name__}, not an autoencoder.")
    return module


def _is_diffusers_folder(folder: Path) -> bool:
    """A diffusers pipeline folder (``unet/``) or a bare ``UNet2DModel`` folder (its own weights file names: single,
    sharded or pickled; the adapter refuses pickled ones with its own message)."""
    names = (
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.safetensors.index.json",
        "diffusion_pytorch_model.bin",
    )
    return (folder / "unet" / "config.json").is_file() or any((folder / name).is_file() for name in names)


def load_image_prior(name_or_path: str | Path, device: torch.device | str = "cpu") -> ImagePrior:
    """Load a shipped image prior by name, an export folder, or a diffusers folder, on ``device``."""
    folder = _resolve(name_or_path)
    if _is_diffusers_folder(folder):
        from mgdm_audio.image.adapters import load_diffusers_prior

        denoiser, shape = load_diffusers_prior(folder, device=device)
        return ImagePrior(denoiser, folder.name, "diffusers", tuple(shape), tuple(shape), path=folder)
    module, config, sha256 = load_export(folder, _build)
    metadata = config.get("metadata", {})
    kind = metadata.get("kind")
    if kind not in PRIOR_KINDS or not isinstance(module, EDMImagePrior):
        raise UserInputError(
            f"{folder / CONFIG_NAME} is not an image prior (metadata.kind is {kind!r}; expected pixel or latent "
            "with an EDM U-Net; autoencoders are loaded by their latent prior)."
        )
    try:
        image_shape = tuple(int(v) for v in metadata["image_shape"])
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(image_shape)
    except (KeyError, TypeError, ValueError):
        raise UserInputError(f"{folder / CONFIG_NAME} lacks metadata.image_shape (C, H, W).") from None
    autoencoder = None
    sample_shape = image_shape
    if kind == "latent":
        if "autoencoder" not in metadata:
            raise UserInputError(f"{folder / CONFIG_NAME} is a latent prior without metadata.autoencoder.")
        autoencoder = load_autoencoder(metadata["autoencoder"], relative_to=folder)
        sample_shape = autoencoder.latent_shape(image_shape)  # type: ignore[arg-type]
    channels = module.unet_config.in_channels
    if channels != sample_shape[0]:
        raise UserInputError(f"{folder}: the U-Net has {channels} channels but the samples have {sample_shape[0]}.")
    prior = ImagePrior(
        denoiser=module,
        name=str(config.get("name", folder.name)),
        kind=kind,
        image_shape=image_shape,  # type: ignore[arg-type]
        sample_shape=sample_shape,  # type: ignore[arg-type]
        autoencoder=autoencoder,
        weights_sha256=sha256,
        path=folder,
        config=config,
    )
    return prior.to(device)


def generate_images(prior: ImagePrior, n_samples: int, seed: int, steps: int = 50, eta: float = 1.0) -> Tensor:
    """Unconditional images ``(n_samples, C, H, W)`` in ``[-1, 1]``: the core's DDIM(eta) on the prior's space
    (``steps`` points of its table, start ``x_T = n``), decoded for latent priors. Same seed, same output."""
    from mgdm_audio.core.rng import make_generator
    from mgdm_audio.samplers.run import RunSpec, resolve, run_posterior

    if n_samples < 1:
        raise UserInputError(f"the number of samples must be at least 1, got {n_samples}.")
    run = resolve(RunSpec("ddim", "default", (("eta", eta), ("n_steps", steps))), "plain")
    device = next(iter(prior.denoiser.parameters())).device if isinstance(prior.denoiser, nn.Module) else "cpu"
    generator, noise = make_generator(seed + 1, device), make_generator(seed)
    result = run_posterior(
        prior, None, run, n_samples, generator, x_shape=prior.sample_shape, device=device, init=noise
    )
    with torch.no_grad():
        return prior.to_image(result.samples)


__all__ = [
    "PRIOR_KINDS",
    "DecodedOperator",
    "ImagePrior",
    "available_image_priors",
    "generate_images",
    "load_autoencoder",
    "load_image_prior",
]
