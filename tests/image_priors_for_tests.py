"""Tiny randomly initialised image priors exported like the trainer does (pixel and latent), and tiny
KernelWizard blur weights saved like the published checkpoint, for fast tests."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from mgdm_audio.image.kernel_wizard import KernelWizardConfig, KernelWizardGenerator
from mgdm_audio.image.model import build_autoencoder, build_image_prior
from mgdm_audio.training.export import export_model

IMAGE_SHAPE = (1, 16, 16)


def _random_output(module: torch.nn.Module, seed: int) -> None:
    """Give the zero-initialised output conv random weights, so the network's output is not identically 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "conv_out" in name:
                p.copy_(0.01 * torch.randn(p.shape, generator=g))


def export_tiny_pixel_prior(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    prior = build_image_prior("tiny")
    _random_output(prior, seed)
    meta = {"kind": "pixel", "image_shape": list(IMAGE_SHAPE)}
    config = {"name": "tiny-pixel", "model": {"architecture": prior.export_config()}, "metadata": meta}
    export_model(folder, prior.state_dict(), config, "# tiny test prior\n")
    return folder


def export_tiny_latent_prior(folder: Path, seed: int = 0) -> Path:
    """A latent prior folder with its autoencoder in the sub-folder ``autoencoder`` (named relatively)."""
    torch.manual_seed(seed)
    ae = build_autoencoder(channels=[8, 8], latent_channels=2, groups=4)
    ae_config = {"name": "tiny-ae", "model": {"architecture": ae.export_config()}, "metadata": {"kind": "autoencoder"}}
    export_model(folder / "autoencoder", ae.state_dict(), ae_config, "# tiny test autoencoder\n")
    prior = build_image_prior("tiny", in_channels=2, channels=[8, 16], attention=[False, True])
    _random_output(prior, seed)
    meta = {"kind": "latent", "image_shape": list(IMAGE_SHAPE), "autoencoder": "autoencoder"}
    config = {"name": "tiny-latent", "model": {"architecture": prior.export_config()}, "metadata": meta}
    export_model(folder, prior.state_dict(), config, "# tiny test latent prior\n")
    return folder


SMALL_KERNEL_WIZARD = KernelWizardConfig(input_nc=3, nf=4, front_RBs=2, back_RBs=3)


def random_kernel_wizard(config: KernelWizardConfig = SMALL_KERNEL_WIZARD, seed: int = 0) -> KernelWizardGenerator:
    torch.manual_seed(seed)
    generator = KernelWizardGenerator(config)
    with torch.no_grad():  # default init leaves some biases at zero; make every tensor matter
        for name, tensor in generator.state_dict().items():
            if name.endswith("bias"):
                tensor.normal_(0.0, 0.05)
    return generator.eval()


def published_style_kernel_wizard(path: Path, generator: KernelWizardGenerator, wrap: bool = False) -> Path:
    """A ``.pth`` laid out like the published checkpoint: generator + encoder keys (+ DataParallel prefix)."""
    state: dict[str, torch.Tensor] = OrderedDict(generator.state_dict())
    state["kernel_extractor.model.1.weight"] = torch.randn(generator.config.nf, 2 * generator.config.nf, 7, 7)
    if wrap:
        state = OrderedDict((f"module.{k}", v) for k, v in state.items())
    torch.save(state, path)
    return path
