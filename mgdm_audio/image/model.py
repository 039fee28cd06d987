r"""Image priors the package trains: an EDM-preconditioned 2-D U-Net and a small autoencoder for latent priors.

Network ``F`` (:class:`ImageUNet`), ``(B, C, H, W)`` in and out:

* a k3 conv to ``channels[0]``;
* level ``i``: ``blocks`` ResNet blocks (GroupNorm, SiLU, conv k3, twice; FiLM ``h (1 + scale) + shift`` from the
  noise embedding after the second GroupNorm), self-attention where ``attention[i]``, every output kept as a
  skip, then (except at the last level) a stride-2 k3 conv to ``channels[i + 1]``;
* middle: ResNet, attention, ResNet;
* up level ``i`` (mirrored): ``blocks`` ResNet blocks on ``concat(h, 2^{-1/2} skip)``, attention where
  ``attention[i]``, then nearest 2x upsampling and a k3 conv;
* out: GroupNorm, SiLU, zero-initialised k3 conv (so ``F = 0`` at initialisation).

:class:`EDMImagePrior` wraps it with the EDM preconditioning of :mod:`mgdm_audio.core.edm`
(``D(x, sigma)``, images in ``[-1, 1]``, ``sigma_data = 0.5`` for images, hard clamp to ``[-1, 1]``).

:class:`Autoencoder` (``Enc``, ``Dec``): a convolutional autoencoder with a ``tanh`` bottleneck,
``(B, C, H, W) -> (B, latent_channels, H / 2^d, W / 2^d)``. It is trained by the same trainer as a
*denoising* autoencoder: ``forward(x, sigma) = Dec(Enc(x))`` is the trainer's "denoiser", the recipe draws
tiny sigmas, and without a ``loss_weight`` the loss is the plain reconstruction MSE
``|Dec(Enc(x_0 + sigma n)) - x_0|^2``. A latent prior is then an :class:`EDMImagePrior` on ``Enc(x_0)``
(its ``sigma_data`` is the measured latent standard deviation), and every likelihood composes ``Dec``
(as the MGDM reference code does for its LDM prior: ``A_lat(z) = A(Dec(z))``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgdm_audio.core.edm import EDMConfig, EDMPreconditioned, NoiseEmbedding
from mgdm_audio.core.errors import UserInputError


def _lists_as_tuples(d: dict[str, Any]) -> dict[str, Any]:
    """Config values from YAML/JSON: lists become tuples (the frozen configs hold tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


class _JsonConfig:
    """The JSON round trip of a frozen config dataclass (lists read from JSON become tuples)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(**_lists_as_tuples(d))


@dataclass(frozen=True)
class ImageUNetConfig(_JsonConfig):
    """Architecture of :class:`ImageUNet` (sizes of the named configs in :data:`IMAGE_CONFIGS`)."""

    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128)
    blocks: int = 2
    attention: tuple[bool, ...] = (False, False, True)
    attention_heads: int = 4
    groups: int = 8
    fourier_features: int = 16
    embedding_features: int = 128

    def __post_init__(self) -> None:
        if len(self.attention) != len(self.channels):
            raise UserInputError("ImageUNetConfig: 'attention' needs one flag per entry of 'channels'.")
        if any(c % self.groups for c in self.channels):
            raise UserInputError(f"ImageUNetConfig: every channel count must be a multiple of groups={self.groups}.")
        attended = [c for c, a in zip(self.channels, self.attention, strict=True) if a] + [self.channels[-1]]
        if self.attention_heads < 1 or any(c % self.attention_heads for c in attended):  # middle: always attention
            raise UserInputError(
                f"ImageUNetConfig: the channel count of every attention level (and the last level) must be a "
                f"multiple of attention_heads={self.attention_heads}."
            )

    @property
    def downsampling(self) -> int:
        """Height and width must be multiples of this."""
        return 2 ** (len(self.channels) - 1)


#: Named architectures: ``tiny`` for tests, ``small`` for the shipped Fashion-MNIST priors (pixel and latent).
IMAGE_CONFIGS: dict[str, ImageUNetConfig] = {
    "tiny": ImageUNetConfig(
        channels=(8, 16),
        blocks=1,
        attention=(False, True),
        attention_heads=2,
        groups=4,
        fourier_features=4,
        embedding_features=16,
    ),
    "small": ImageUNetConfig(),
}


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.film = nn.Linear(emb, 2 * cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return h + self.skip(x)


class _Attention(nn.Module):
    """Pre-norm multi-head self-attention over the ``H W`` positions, with a residual."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(1, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, d)
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class ImageUNet(nn.Module):
    """The network ``F(x_in, c_noise)``: ``(B, C, H, W)`` and ``(B,)`` -> ``(B, C, H, W)`` (module docstring)."""

    def __init__(self, config: ImageUNetConfig) -> None:
        super().__init__()
        self.config = c = config
        emb, g = c.embedding_features, c.groups
        self.embedding = NoiseEmbedding(c.fourier_features, emb)
        self.conv_in = nn.Conv2d(c.in_channels, c.channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.down_attention = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, ch in enumerate(c.channels):
            self.down.append(nn.ModuleList(_ResBlock(ch, ch, emb, g) for _ in range(c.blocks)))
            self.down_attention.append(_Attention(ch, c.attention_heads) if c.attention[i] else nn.Identity())
            if i + 1 < len(c.channels):
                self.downsample.append(nn.Conv2d(ch, c.channels[i + 1], 3, stride=2, padding=1))
        bottom = c.channels[-1]
        self.mid1 = _ResBlock(bottom, bottom, emb, g)
        self.mid_attention = _Attention(bottom, c.attention_heads)
        self.mid2 = _ResBlock(bottom, bottom, emb, g)
        self.up = nn.ModuleList()
        self.up_attention = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in enumerate(c.channels):
            self.up.append(nn.ModuleList(_ResBlock(2 * ch, ch, emb, g) for _ in range(c.blocks)))
            self.up_attention.append(_Attention(ch, c.attention_heads) if c.attention[i] else nn.Identity())
            if i + 1 < len(c.channels):
                self.upsample.append(nn.Conv2d(c.channels[i + 1], ch, 3, padding=1))
        self.norm_out = nn.GroupNorm(g, c.channels[0])
        self.conv_out = nn.Conv2d(c.channels[0], c.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def check_shape(self, x: Tensor) -> None:
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise UserInputError(f"the image prior expects (B, {c.in_channels}, H, W), got {tuple(x.shape)}.")
        if x.shape[-1] % c.downsampling or x.shape[-2] % c.downsampling:
            raise UserInputError(
                f"the image prior needs H and W that are multiples of {c.downsampling}, got {tuple(x.shape[-2:])}."
            )

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        self.check_shape(x)
        emb = self.embedding(c_noise.to(x.dtype))
        h = self.conv_in(x)
        skips: list[list[Tensor]] = []
        for i, blocks in enumerate(self.down):
            level = []
            for block in blocks:
                h = self.down_attention[i](block(h, emb))
                level.append(h)
            skips.append(level)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid2(self.mid_attention(self.mid1(h, emb)), emb)
        scale = 2**-0.5
        for i in reversed(range(len(self.up))):
            for block in self.up[i]:
                h = self.up_attention[i](block(torch.cat([h, scale * skips[i].pop()], dim=1), emb))
            if i > 0:
                h = self.upsample[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class EDMImagePrior(EDMPreconditioned):
    """``D(x, sigma)`` (core Denoiser protocol) around an :class:`ImageUNet`; ``x`` is ``(B, C, H, W)``."""

    def __init__(self, unet: ImageUNetConfig, edm: EDMConfig | None = None) -> None:
        super().__init__(edm)
        self.net = ImageUNet(unet)

    @property
    def unet_config(self) -> ImageUNetConfig:
        return self.net.config

    def export_config(self) -> dict[str, Any]:
        return {"kind": "edm-unet2d", "unet": self.unet_config.to_dict(), "edm": self.edm.to_dict()}


def build_image_prior(config: str = "small", edm: dict[str, Any] | None = None, **overrides: Any) -> EDMImagePrior:
    """Recipe factory: a named architecture (``tiny``, ``small``) with optional overrides (images: sigma_d 0.5)."""
    if config not in IMAGE_CONFIGS:
        raise UserInputError(f"unknown image model config '{config}'; choose one of: {', '.join(IMAGE_CONFIGS)}.")
    unet = replace(IMAGE_CONFIGS[config], **_lists_as_tuples(overrides))
    return EDMImagePrior(unet, EDMConfig(**{"sigma_data": 0.5, "sigma_min": 2e-3, "sigma_max": 80.0, **(edm or {})}))


# ------------------------------------------------------------------------------------------ autoencoder


@dataclass(frozen=True)
class AutoencoderConfig(_JsonConfig):
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 4
    groups: int = 8

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channels) - 1)


class _PlainBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(groups, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1),
        )  # fmt: skip
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class Autoencoder(nn.Module):
    """``Enc: (B, C, H, W) -> (B, L, H / 2^d, W / 2^d)`` in ``(-1, 1)`` (tanh) and ``Dec`` back (module docstring)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = c = config
        enc: list[nn.Module] = [nn.Conv2d(c.in_channels, c.channels[0], 3, padding=1)]
        for i, ch in enumerate(c.channels):
            enc.append(_PlainBlock(ch, ch, c.groups))
            if i + 1 < len(c.channels):
                enc.append(nn.Conv2d(ch, c.channels[i + 1], 3, stride=2, padding=1))
        enc += [
            nn.GroupNorm(c.groups, c.channels[-1]),
            nn.SiLU(),
            nn.Conv2d(c.channels[-1], c.latent_channels, 3, padding=1),
        ]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(c.latent_channels, c.channels[-1], 3, padding=1)]
        for i in reversed(range(len(c.channels))):
            dec.append(_PlainBlock(c.channels[i], c.channels[i], c.groups))
            if i > 0:
                dec += [
                    nn.Upsample(scale_factor=2.0, mode="nearest"),
                    nn.Conv2d(c.channels[i], c.channels[i - 1], 3, padding=1),
                ]
        dec += [nn.GroupNorm(c.groups, c.channels[0]), nn.SiLU(), nn.Conv2d(c.channels[0], c.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        _, h, w = image_shape
        d = self.config.downsampling
        if h % d or w % d:
            raise UserInputError(f"the autoencoder needs H and W that are multiples of {d}, got {(h, w)}.")
        return (self.config.latent_channels, h // d, w // d)

    def encode(self, x: Tensor) -> Tensor:
        return torch.tanh(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """The trainer's view: reconstruct ``x_0`` from ``x_0 + sigma n`` (``sigma`` is unused by the network)."""
        return self.decode(self.encode(x))

    def export_config(self) -> dict[str, Any]:
        return {"kind": "autoencoder", "autoencoder": self.config.to_dict()}


def build_autoencoder(**overrides: Any) -> Autoencoder:
    """Recipe factory of :class:`Autoencoder` (defaults: 1 channel, 32-64-64, 4 latent channels, f = 4)."""
    return Autoencoder(AutoencoderConfig(**_lists_as_tuples(overrides)))


def module_from_export_config(architecture: dict[str, Any]) -> nn.Module:
    """Rebuild an :class:`EDMImagePrior` or :class:`Autoencoder` from its ``export_config()``."""
    kind = architecture.get("kind")
    if kind == "edm-unet2d":
        return EDMImagePrior(ImageUNetConfig.from_dict(architecture["unet"]), EDMConfig(**architecture["edm"]))
    if kind == "autoencoder":
        return Autoencoder(AutoencoderConfig.from_dict(architecture["autoencoder"]))
    raise UserInputError(
        f"unknown image model kind {kind!r} in the export config (expected edm-unet2d or autoencoder)."
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "IMAGE_CONFIGS",
    "Autoencoder",
    "AutoencoderConfig",
    "EDMImagePrior",
    "ImageUNet",
    "ImageUNetConfig",
    "build_autoencoder",
    "build_image_prior",
    "count_parameters",
    "module_from_export_config",
]
