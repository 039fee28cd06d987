r"""MSDM's published network, built by the field's own package, as the project's VE denoiser.

MSDM (Mariani et al. 2023) trains ``audio-diffusion-pytorch==0.0.43``'s ``UNet1d`` inside that package's EDM
``Diffusion`` (``sigma_data = 0.2``, ``dynamic_threshold = 0``: a hard clamp to ``[-1, 1]``). The package's
``Diffusion.denoise_fn(x, sigma)`` is

.. math:: D(x, \sigma) = \mathrm{clamp}_{[-1, 1]}\big(c_{skip} x + c_{out} F(c_{in} x, \tfrac14 \ln \sigma)\big)

with EDM's ``c_skip, c_out, c_in`` (:mod:`mgdm_audio.core.edm`), so :class:`MSDMPrior` is the project's
:class:`~mgdm_audio.core.edm.EDMPreconditioned` with ``F`` = the package's ``UNet1d`` held as ``self.net``: its
state-dict keys are ``net.<UNet1d key>``, the published checkpoints' ``model.unet.<key>`` with the prefix replaced
(:mod:`mgdm_audio.audio.msdm_convert`). The ``msdm`` training recipe builds the same module, so a prior trained
here and a converted published one are interchangeable.

The package is the optional ``[msdm]`` extra (see the README: it is installed with ``--no-deps`` because it declares
the obsolete ``data-science-types`` stubs); it is imported only when a module is built.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from mgdm_audio.core.edm import EDMConfig, EDMPreconditioned
from mgdm_audio.core.errors import UserInputError

#: ``model.architecture.kind`` of an export built from the package's ``UNet1d``.
MSDM_KIND = "audio-diffusion-pytorch-0.0.43-unet1d"
#: ... and of the product of single-stem networks (ISDM).
ISDM_KIND = "audio-diffusion-pytorch-0.0.43-unet1d-per-stem"
PACKAGE_VERSION = "0.0.43"
INSTALL_HINT = (
    "pip install --no-deps audio-diffusion-pytorch==0.0.43 einops-exts==0.0.4 "
    "(the [msdm] extra; see the README's MSDM section)"
)


@dataclass(frozen=True)
class MSDMNetConfig:
    """The keyword arguments of ``audio_diffusion_pytorch.UNet1d`` (0.0.43); defaults are MSDM's
    ``exp/train_msdm.yaml`` (405,497,700 parameters). ``kernel_sizes_init`` is accepted and unused by the package."""

    in_channels: int = 4
    channels: int = 256
    patch_factor: int = 16
    patch_blocks: int = 1
    resnet_groups: int = 8
    kernel_multiplier_downsample: int = 2
    kernel_sizes_init: tuple[int, ...] = (1, 3, 7)
    multipliers: tuple[int, ...] = (1, 2, 4, 4, 4, 4, 4)
    factors: tuple[int, ...] = (4, 4, 4, 2, 2, 2)
    num_blocks: tuple[int, ...] = (2, 2, 2, 2, 2, 2)
    attentions: tuple[bool, ...] = (False, False, False, True, True, True)
    attention_heads: int = 8
    attention_features: int = 128
    attention_multiplier: int = 2
    use_nearest_upsample: bool = False
    use_skip_scale: bool = True
    use_attention_bottleneck: bool = True
    use_context_time: bool = True

    def __post_init__(self) -> None:
        levels = len(self.factors)
        if len(self.multipliers) != levels + 1 or len(self.num_blocks) != levels or len(self.attentions) != levels:
            raise UserInputError(
                f"MSDM network config: multipliers needs {levels + 1} entries and num_blocks/attentions {levels} "
                f"(one per factor), got {len(self.multipliers)}, {len(self.num_blocks)}, {len(self.attentions)}."
            )

    @property
    def stems(self) -> int:
        return self.in_channels

    @property
    def downsampling(self) -> int:
        """Input lengths must be a multiple of ``patch_factor * prod(factors)`` (8192 for the published network)."""
        return self.patch_factor * math.prod(self.factors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MSDMNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserInputError(f"MSDM network config: unknown keys {', '.join(unknown)}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


#: ``published``: MSDM's 4-stem network; ``tiny``: the same classes at test size.
MSDM_CONFIGS: dict[str, MSDMNetConfig] = {
    "published": MSDMNetConfig(),
    "tiny": MSDMNetConfig(
        channels=16,
        patch_factor=4,
        resnet_groups=4,
        multipliers=(1, 2, 2),
        factors=(4, 4),
        num_blocks=(1, 1),
        attentions=(False, True),
        attention_heads=2,
        attention_features=8,
    ),
}

#: The noise-level table of the MGDM reference's audio experiment (Karras 5e-4 .. 20, rho 3, 1000 levels).
MGDM_AUDIO_LEVELS: dict[str, Any] = {"sigma_min": 5.0e-4, "sigma_max": 20.0, "rho": 3.0, "levels": 1000}


def msdm_config(name: str, **overrides: Any) -> MSDMNetConfig:
    if name not in MSDM_CONFIGS:
        raise UserInputError(f"unknown MSDM network config '{name}'; choose one of: {', '.join(MSDM_CONFIGS)}.")
    return replace(MSDM_CONFIGS[name], **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})


def build_unet1d(config: MSDMNetConfig) -> nn.Module:
    """The package's ``UNet1d`` for ``config`` (a :class:`UserInputError` naming the extra when it is absent)."""
    try:
        installed = importlib.metadata.version("audio-diffusion-pytorch")
        from audio_diffusion_pytorch import UNet1d
    except (ImportError, importlib.metadata.PackageNotFoundError) as err:
        raise UserInputError(
            f"the MSDM network needs audio-diffusion-pytorch 0.0.43 ({err}): {INSTALL_HINT}."
        ) from None
    if installed != PACKAGE_VERSION:
        raise UserInputError(
            f"the MSDM network needs audio-diffusion-pytorch 0.0.43, found {installed}: {INSTALL_HINT}."
        )
    kwargs = config.to_dict()
    return UNet1d(**{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})


class MSDMPrior(EDMPreconditioned):
    """``D(x, sigma)`` with the package's ``UNet1d`` as ``F`` (``x``: ``(B, S, T)``, ``T`` a multiple of
    :attr:`MSDMNetConfig.downsampling`); equal to the package's ``Diffusion.denoise_fn`` with ``sigma_data`` and the
    hard clamp of ``edm``."""

    def __init__(self, net_config: MSDMNetConfig, edm: EDMConfig | None = None) -> None:
        super().__init__(edm)
        self.net_config = net_config
        self.net = build_unet1d(net_config)

    @property
    def unet_config(self) -> MSDMNetConfig:
        """What the loaders read (``stems``, ``downsampling``), named as for the project's own U-Net."""
        return self.net_config

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        c = self.net_config
        if x.ndim != 3 or x.shape[1] != c.stems or x.shape[-1] % c.downsampling:
            raise UserInputError(
                f"the MSDM prior expects input of shape (B, {c.stems}, T) with T a multiple of {c.downsampling} "
                f"samples, got {tuple(x.shape)}; pad or crop the chunk."
            )
        return super().forward(x, sigma)

    def export_config(self) -> dict[str, Any]:
        return {"kind": MSDM_KIND, "unet1d": self.net_config.to_dict(), "edm": self.edm.to_dict()}


def build_msdm_prior(config: str = "published", edm: dict[str, Any] | None = None, **overrides: Any) -> MSDMPrior:
    """The recipe factory: a named :data:`MSDM_CONFIGS` entry with ``UNet1d`` keyword overrides."""
    return MSDMPrior(msdm_config(config, **overrides), EDMConfig(**(edm or {})))


class ISDMPrior(nn.Module):
    r"""MSDM's weakly supervised variant (ISDM): one single-stem :class:`MSDMPrior` per stem, as one product prior.

    The prior over the stems is the product of the per-stem priors, so its denoiser acts channel-wise:
    ``D(x, sigma)_s = D_s(x_s, sigma)`` (MSDM's ``WeaklyMSDMSeparator``). Every member has one input channel and the
    same EDM parameters; the noise-level table is the first member's.
    """

    def __init__(self, members: list[MSDMPrior]) -> None:
        super().__init__()
        if not members or any(m.net_config.stems != 1 for m in members):
            raise UserInputError("an ISDM prior needs one single-channel MSDM network per stem.")
        if len({m.net_config.downsampling for m in members}) != 1 or len({m.edm for m in members}) != 1:
            raise UserInputError("the ISDM networks must share their length multiple and EDM parameters.")
        self.stems = nn.ModuleList(members)

    @property
    def levels(self) -> Any:
        return self.stems[0].levels

    @property
    def unet_config(self) -> MSDMNetConfig:
        return replace(self.stems[0].net_config, in_channels=len(self.stems))

    @property
    def autocast_bf16(self) -> bool:
        return bool(self.stems[0].autocast_bf16)

    @autocast_bf16.setter
    def autocast_bf16(self, value: bool) -> None:
        for member in self.stems:
            member.autocast_bf16 = bool(value)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        if x.ndim != 3 or x.shape[1] != len(self.stems):
            raise UserInputError(
                f"the ISDM prior expects input of shape (B, {len(self.stems)}, T), got {tuple(x.shape)}."
            )
        return torch.cat([m(x[:, i : i + 1], sigma) for i, m in enumerate(self.stems)], dim=1)

    def export_config(self) -> dict[str, Any]:
        return {"kind": ISDM_KIND, "members": [m.export_config() for m in self.stems]}


def msdm_prior_from_export_config(config: dict[str, Any]) -> MSDMPrior | ISDMPrior:
    """Rebuild the module from :meth:`MSDMPrior.export_config` or :meth:`ISDMPrior.export_config` output."""
    if config["kind"] == ISDM_KIND:
        return ISDMPrior([msdm_prior_from_export_config(m) for m in config["members"]])  # type: ignore[misc]
    return MSDMPrior(MSDMNetConfig.from_dict(config["unet1d"]), EDMConfig(**config["edm"]))
