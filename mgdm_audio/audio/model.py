r"""The multi-stem music prior: a 1-D U-Net over all stems jointly, EDM-preconditioned (as MSDM).

Network ``F`` (``MultiStemUNet``): the stems are the channels, ``(B, S, T)`` in and out.

* patch-in: fold ``patch`` consecutive samples into channels (MSDM's ``patch_factor``),
  ``(B, S, T) -> (B, S * patch, T / patch)``, then a k3 conv to ``channels[0]``;
* down level ``i``: strided conv (kernel ``2 f + 1``, stride ``f``) ``channels[i] -> channels[i+1]``, then
  ``blocks[i]`` ResNet blocks (GroupNorm, SiLU, conv k3, twice; FiLM ``h (1 + scale) + shift`` after the
  second GroupNorm from the noise embedding), then a transformer block where ``attention[i]``; every ResNet
  and transformer output is kept as a skip;
* bottleneck: ResNet, transformer, ResNet;
* up level ``i`` (mirrored): one ResNet block per skip of level ``i`` on ``concat(h, 2^{-1/2} skip)``, the
  transformer where ``attention[i]``, then a transposed conv (kernel ``2 f``, stride ``f``) back to
  ``channels[i]``;
* top skip (``top_skip``, optional): one more ResNet block at the patch resolution on
  ``concat(h, 2^{-1/2} h_patch)``, where ``h_patch`` is the patch-in output, added to ``h`` (its last conv and its
  residual conv are zero-initialised, so adding it to a trained network leaves ``F`` unchanged);
* patch-out: GroupNorm, SiLU, conv k3 to ``S * patch`` channels (zero-initialised, so ``F = 0`` at
  initialisation), unfolded back to samples.

Why the top skip: without it the finest skip sits after the first strided conv, ``channels[1]`` values per
``patch * factors[0]`` samples of ``S`` stems. For ``small`` that is 128 values for 4 x 64 = 256 samples, so ``F``
(and hence ``D(x, sigma) - c_skip x``) is confined to a ``2 T``-dimensional set inside the ``4 T``-dimensional
space of the stems. In the other half ``D = c_skip x``, the posterior mean of white ``N(0, sigma_d^2)`` stems, so
denoising leaves noise there and generation fills those dimensions with white noise of variance ``sigma_d^2``
(measured: the broadband, equally loud generated stems of the prior trained without it). MSDM's widths
(512 values per 256 samples) do not have this bottleneck. With the top skip the
patch-resolution path carries ``channels[0] = S * patch`` values per patch, i.e. the full signal.

The noise embedding is a learned Fourier-feature map of ``c_noise`` (``[sin 2 pi w c, cos 2 pi w c, c]``)
followed by a two-layer GELU MLP; each ResNet block projects it to its own (scale, shift).
The input length must be a multiple of ``patch * prod(factors)`` (:meth:`MultiStemUNet.check_length`).

EDM wrapper (``EDMPrior``, Karras et al. 2022, as MSDM's ``Diffusion`` with ``sigma_data = 0.2``):

.. math::
    c_{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2},\quad
    c_{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}},\quad
    c_{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}},\quad c_{noise} = \tfrac14 \ln \sigma,

    D(x, \sigma) = \mathrm{clamp}_{[-1, 1]}\big(c_{skip} x + c_{out} F(c_{in} x, c_{noise})\big),

trained with ``ln sigma ~ N(-3, 1)`` and the weight ``lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2``
(:meth:`EDMPrior.loss_weight`), which makes the weighted loss the plain MSE of ``F`` against its target.
The hard clamp (``clamp_output``) is MSDM's behaviour with ``dynamic_threshold = 0``.

Optional **spectral skip** (``build_prior(..., spectral_skip=True)``, :class:`SpectralSkip`; not in MSDM): the
scalar ``c_skip x`` is replaced by a per-stem Wiener filter ``P_s(f) / (P_s(f) + sigma^2)`` whose power spectra are
fitted to the training data before the first step. ``c_skip`` is exactly that filter for white data of variance
``sigma_d^2``; for music, whose stems are far from white, the network then only has to learn what a stationary
Gaussian model of each stem cannot explain. With ``P_s = sigma_d^2`` (the initial buffer) the prior is MSDM's.

Why not ``a-unet`` / ``audio-diffusion-pytorch`` for the CPU priors (checked on their PyPI releases 0.0.16 / 0.0.43 and
0.1.3): both are
unmaintained since 2023-02; 0.1.x only has v-diffusion with uniform sigma, so MSDM's EDM preconditioning,
log-normal sigmas and Karras grid would have to be re-added anyway; 0.1.x imports torchaudio at import time
(a hard dependency whose wheels are CUDA builds); a-unet's closure-built modules cannot be pickled; both pull
the obsolete ``data-science-types`` stubs. This file is the ~300-line alternative the notes suggest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgdm_audio.audio.spectra import filter_by_gain, psd_on_rfft_grid, welch_psd
from mgdm_audio.core.edm import EDMConfig, EDMPreconditioned, NoiseEmbedding, edm_coefficients
from mgdm_audio.core.errors import UserInputError


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`MultiStemUNet` (``channels`` has one more entry than ``factors``)."""

    stems: int = 4
    patch: int = 16
    channels: tuple[int, ...] = (64, 128, 256, 256)
    factors: tuple[int, ...] = (4, 4, 2)
    blocks: tuple[int, ...] = (1, 1, 1)
    attention: tuple[bool, ...] = (False, False, True)
    attention_heads: int = 4
    attention_head_features: int = 64
    feedforward_multiplier: int = 2
    groups: int = 8
    fourier_features: int = 64
    embedding_features: int = 256
    top_skip: bool = False

    def __post_init__(self) -> None:
        levels = len(self.factors)
        if len(self.channels) != levels + 1 or len(self.blocks) != levels or len(self.attention) != levels:
            raise UserInputError(
                f"model config: channels needs {levels + 1} entries and blocks/attention {levels} "
                f"(one per factor), got {len(self.channels)}, {len(self.blocks)}, {len(self.attention)}."
            )
        if any(c % self.groups for c in self.channels):
            raise UserInputError(f"model config: every channel count must be divisible by groups={self.groups}.")

    @property
    def downsampling(self) -> int:
        """Total downsampling factor: input lengths must be a multiple of it."""
        return self.patch * math.prod(self.factors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        tuples = {"channels", "factors", "blocks", "attention"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})


#: Named architectures. ``small`` is the shipped CPU prior. MSDM's published network is not re-implemented here: the
#: ``msdm`` recipe builds it with MSDM's own package (:mod:`mgdm_audio.audio.msdm_net`), so that a prior trained here
#: and the published checkpoints are interchangeable.
CONFIGS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(
        patch=4,
        channels=(16, 16, 32),
        factors=(2, 2),
        blocks=(1, 1),
        attention=(False, True),
        attention_heads=2,
        attention_head_features=8,
        groups=4,
        fourier_features=8,
        embedding_features=32,
    ),
    "small": UNetConfig(),
}


def get_config(name: str, **overrides: Any) -> UNetConfig:
    if name not in CONFIGS:
        raise UserInputError(f"unknown model config '{name}'; choose one of: {', '.join(CONFIGS)}.")
    return replace(CONFIGS[name], **overrides)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv3, GroupNorm-FiLM-SiLU-conv3, plus a (1x1 conv) residual."""

    def __init__(self, in_channels: int, out_channels: int, embedding_features: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.film = nn.Linear(embedding_features, 2 * out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1)
        self.residual = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(embedding).unsqueeze(-1).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.residual(x)


class TransformerBlock(nn.Module):
    """Pre-norm multi-head self-attention over time with a residual, then a 1x1-conv GELU feed-forward."""

    def __init__(self, channels: int, heads: int, head_features: int, multiplier: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * head_features
        self.norm_attention = nn.GroupNorm(1, channels)
        self.qkv = nn.Conv1d(channels, 3 * inner, 1, bias=False)
        self.project = nn.Conv1d(inner, channels, 1)
        self.norm_feedforward = nn.GroupNorm(1, channels)
        self.feedforward = nn.Sequential(
            nn.Conv1d(channels, multiplier * channels, 1), nn.GELU(), nn.Conv1d(multiplier * channels, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        b, _, t = x.shape
        q, k, v = self.qkv(self.norm_attention(x)).reshape(b, 3, self.heads, -1, t).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)  # (b, heads, t, d)
        x = x + self.project(a.transpose(-1, -2).reshape(b, -1, t))
        return x + self.feedforward(self.norm_feedforward(x))


class MultiStemUNet(nn.Module):
    """The network ``F(x_in, c_noise)``: ``(B, S, T)`` and ``(B,)`` -> ``(B, S, T)`` (see the module docstring)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = c = config
        emb, g = c.embedding_features, c.groups
        self.embedding = NoiseEmbedding(c.fourier_features, emb)
        self.patch_in = nn.Conv1d(c.stems * c.patch, c.channels[0], 3, padding=1)
        self.downsamples = nn.ModuleList()
        self.down_blocks = nn.ModuleList()
        self.down_attention = nn.ModuleList()
        for i, f in enumerate(c.factors):
            cin, cout = c.channels[i], c.channels[i + 1]
            self.downsamples.append(nn.Conv1d(cin, cout, 2 * f + 1, stride=f, padding=f))
            self.down_blocks.append(nn.ModuleList(ResnetBlock(cout, cout, emb, g) for _ in range(c.blocks[i])))
            self.down_attention.append(self._transformer(cout) if c.attention[i] else nn.Identity())
        bottom = c.channels[-1]
        self.mid1 = ResnetBlock(bottom, bottom, emb, g)
        self.mid_attention = self._transformer(bottom)
        self.mid2 = ResnetBlock(bottom, bottom, emb, g)
        self.up_blocks = nn.ModuleList()
        self.up_attention = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i, f in enumerate(c.factors):
            cin, cout = c.channels[i], c.channels[i + 1]
            n_skips = c.blocks[i] + int(c.attention[i])
            self.up_blocks.append(nn.ModuleList(ResnetBlock(2 * cout, cout, emb, g) for _ in range(n_skips)))
            self.up_attention.append(self._transformer(cout) if c.attention[i] else nn.Identity())
            self.upsamples.append(nn.ConvTranspose1d(cout, cin, 2 * f, stride=f, padding=f // 2))
        self.top_block: ResnetBlock | None = None
        if c.top_skip:
            self.top_block = ResnetBlock(2 * c.channels[0], c.channels[0], emb, g)
            for layer in (self.top_block.conv2, self.top_block.residual):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.norm_out = nn.GroupNorm(g, c.channels[0])
        self.patch_out = nn.Conv1d(c.channels[0], c.stems * c.patch, 3, padding=1)
        nn.init.zeros_(self.patch_out.weight)
        nn.init.zeros_(self.patch_out.bias)

    def _transformer(self, channels: int) -> TransformerBlock:
        c = self.config
        return TransformerBlock(channels, c.attention_heads, c.attention_head_features, c.feedforward_multiplier)

    def check_length(self, x: Tensor) -> None:
        c = self.config
        if x.ndim != 3 or x.shape[1] != c.stems:
            raise UserInputError(f"the prior expects input of shape (B, {c.stems}, T), got {tuple(x.shape)}.")
        if x.shape[-1] % c.downsampling:
            raise UserInputError(
                f"the prior needs a length that is a multiple of {c.downsampling} samples "
                f"(patch {c.patch} x factors {c.factors}), got {x.shape[-1]}; pad or crop the chunk."
            )

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        self.check_length(x)
        c = self.config
        b, s, t = x.shape
        emb = self.embedding(c_noise.to(x.dtype))
        h = x.reshape(b, s, t // c.patch, c.patch).permute(0, 1, 3, 2).reshape(b, s * c.patch, t // c.patch)
        h = top = self.patch_in(h)
        skips: list[list[Tensor]] = []
        for down, blocks, attention in zip(self.downsamples, self.down_blocks, self.down_attention, strict=True):
            h = down(h)
            level: list[Tensor] = []
            for block in blocks:
                h = block(h, emb)
                level.append(h)
            if not isinstance(attention, nn.Identity):
                h = attention(h)
                level.append(h)
            skips.append(level)
        h = self.mid2(self.mid_attention(self.mid1(h, emb)), emb)
        skip_scale = 2**-0.5
        for i in reversed(range(len(c.factors))):
            level = skips[i]
            for block in self.up_blocks[i]:
                h = block(torch.cat([h, skip_scale * level.pop()], dim=1), emb)
            h = self.upsamples[i](self.up_attention[i](h))
        if self.top_block is not None:
            h = h + self.top_block(torch.cat([h, skip_scale * top], dim=1), emb)
        h = self.patch_out(F.silu(self.norm_out(h)))
        return h.reshape(b, s, c.patch, t // c.patch).permute(0, 1, 3, 2).reshape(b, s, t)


@dataclass(frozen=True)
class SpectralSkipConfig:
    """Sizes of :class:`SpectralSkip`: PSD grid points (0 to Nyquist) and reflect padding (samples per side)."""

    bins: int = 1025
    pad: int = 2048
    fit_items: int = 256
    padding: str = "reflect"  # or "zero": a contraction (see spectra.filter_by_gain); "reflect" as first trained

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SpectralSkip(nn.Module):
    r"""A per-stem Wiener filter as EDM's skip path: the MMSE estimate of ``x0`` under a stationary Gaussian prior.

    EDM's ``c_skip x = sigma_d^2 / (sigma^2 + sigma_d^2) x`` is the posterior mean of ``x0`` given
    ``x = x0 + sigma n`` when ``x0`` is *white* with variance ``sigma_d^2``. With the power spectral density
    ``P_s(f)`` of stem ``s`` (a buffer, fitted to training data by :meth:`fit`) the same argument per frequency gives

    .. math:: D_{lin}(x, \sigma)_s = \mathcal F^{-1}\Big[\frac{P_s(f)}{P_s(f) + \sigma^2}\,
              \mathcal F[\mathrm{reflect\_pad}(x_s)]\Big] \text{ (cropped)},

    which equals EDM's ``c_skip x`` when ``P_s = sigma_d^2`` everywhere (the initial value). Music is far from
    white (these stems keep a few per cent of their energy above a quarter of Nyquist), so the network's residual
    target shrinks: on this project's data a fitted filter alone beats the shipped 8M-parameter network in the two
    low-noise bands (2.3x lower loss at ln sigma in [-5, -3); the Wiener column of ``evaluation/results/prior.md``).
    Measured caveat: a prior trained with it reached a lower loss in every band but separated worse with MGDM
    (``evaluation/separation/validation_priors.md``), so the shipped prior does not use it. ``P`` lives on
    ``bins`` points from 0 to Nyquist, is interpolated linearly to each input length, and is scaled so that
    white noise of variance ``v`` has
    ``P = v``. Reflect padding keeps the (circular) FFT filter from wrapping a chunk's end onto its start.
    """

    def __init__(self, stems: int, sigma_data: float, config: SpectralSkipConfig = SpectralSkipConfig()) -> None:
        super().__init__()
        if config.bins < 2 or config.pad < 0 or config.fit_items < 1 or config.padding not in ("reflect", "zero"):
            raise UserInputError(f"spectral skip needs bins >= 2, pad >= 0 and fit_items >= 1, got {config}.")
        self.config = config
        self.register_buffer("psd", torch.full((stems, config.bins), float(sigma_data) ** 2))

    @torch.no_grad()
    def fit(self, chunks: Tensor) -> None:
        """Welch estimate of ``P_s`` from ``chunks`` ``(N, S, T)``: Hann segments of ``2 (bins - 1)``, half overlap."""
        if chunks.ndim != 3 or chunks.shape[1] != self.psd.shape[0]:
            raise UserInputError(f"spectral skip: need chunks (N, {self.psd.shape[0]}, T), got {tuple(chunks.shape)}.")
        self.psd.copy_(welch_psd(chunks, self.config.bins).to(self.psd))

    def gain(self, sigma: Tensor, length: int) -> Tensor:
        """``P / (P + sigma^2)`` on the rfft grid of ``length`` samples: ``(B, S, length // 2 + 1)``."""
        psd = psd_on_rfft_grid(self.psd, length)
        return psd / (psd + sigma.to(psd.dtype).reshape(-1, 1, 1) ** 2)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return filter_by_gain(x, lambda length: self.gain(sigma, length), self.config.pad, padding=self.config.padding)


class EDMPrior(EDMPreconditioned):
    """``D(x, sigma)`` of the core's Denoiser protocol around a :class:`MultiStemUNet` (EDM preconditioning).

    ``sigma`` is a float or a ``(B,)`` tensor, ``x`` is ``(B, S, T)``; ``levels`` is a Karras table
    (``sigma_min`` to ``sigma_max``, ``rho``, ``levels`` entries) for the index-based samplers.
    """

    def __init__(
        self, unet: UNetConfig, edm: EDMConfig | None = None, spectral_skip: SpectralSkipConfig | None = None
    ) -> None:
        super().__init__(edm)
        self.net = MultiStemUNet(unet)
        self.spectral = None if spectral_skip is None else SpectralSkip(unet.stems, self.edm.sigma_data, spectral_skip)

    @property
    def unet_config(self) -> UNetConfig:
        return self.net.config

    def skip(self, x: Tensor, sigma: Tensor, c_skip: Tensor) -> Tensor:
        """EDM's ``c_skip x``, or the per-stem Wiener filter when built with ``spectral_skip``."""
        return c_skip * x if self.spectral is None else self.spectral(x, sigma)

    def fit_to_data(self, dataset: Any, seed: int) -> None:
        """Data-dependent initialisation before training (the trainer calls it once, not on resume): fit the
        spectral skip's PSD to ``fit_items`` items of ``dataset`` in a seeded order. No-op without it."""
        if self.spectral is None:
            return
        n = min(len(dataset), self.spectral.config.fit_items)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        chunks = torch.stack([torch.as_tensor(dataset[int(i)], dtype=torch.float32) for i in order])
        self.spectral.fit(chunks.to(self.spectral.psd.device))

    def export_config(self) -> dict[str, Any]:
        """What :func:`mgdm_audio.audio.priors.load_prior` needs to rebuild this module."""
        config = {"unet": self.unet_config.to_dict(), "edm": self.edm.to_dict()}
        if self.spectral is not None:
            config["spectral_skip"] = self.spectral.config.to_dict()
        return config


def build_prior(
    config: str = "small",
    edm: dict[str, Any] | None = None,
    spectral_skip: bool | dict[str, Any] = False,
    **overrides: Any,
) -> EDMPrior:
    """The recipe factory: a named architecture (``tiny``, ``small``) with optional overrides;
    ``spectral_skip`` (``true`` or a :class:`SpectralSkipConfig` dict) replaces EDM's ``c_skip x`` by a fitted
    per-stem Wiener filter (:class:`SpectralSkip`)."""
    skip = None
    if spectral_skip is True:
        skip = SpectralSkipConfig()
    elif isinstance(spectral_skip, dict):
        skip = SpectralSkipConfig(**spectral_skip)
    return EDMPrior(get_config(config, **overrides), EDMConfig(**(edm or {})), skip)


def prior_from_export_config(config: dict[str, Any]) -> EDMPrior:
    """Rebuild the module from :meth:`EDMPrior.export_config` output (an export of MSDM's package network, whose
    ``kind`` is set, gives an :class:`~mgdm_audio.audio.msdm_net.MSDMPrior`)."""
    if config.get("kind") is not None:
        from mgdm_audio.audio.msdm_net import ISDM_KIND, MSDM_KIND, msdm_prior_from_export_config

        if config["kind"] not in (MSDM_KIND, ISDM_KIND):
            raise ValueError(f"unknown architecture kind {config['kind']!r}")
        return msdm_prior_from_export_config(config)  # type: ignore[return-value]  # same Denoiser interface
    skip = config.get("spectral_skip")
    return EDMPrior(
        UNetConfig.from_dict(config["unet"]),
        EDMConfig(**config["edm"]),
        None if skip is None else SpectralSkipConfig(**skip),
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "CONFIGS",
    "EDMConfig",
    "EDMPrior",
    "MultiStemUNet",
    "SpectralSkip",
    "SpectralSkipConfig",
    "UNetConfig",
    "build_prior",
    "count_parameters",
    "edm_coefficients",
    "get_config",
    "prior_from_export_config",
]
