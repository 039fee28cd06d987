r"""The stationary Gaussian stem prior: an audio prior whose posterior is known in closed form.

Independent stems, each a stationary Gaussian process with power spectral density ``P_k(f)``
(:mod:`mgdm_audio.audio.spectra`). Its exact denoiser is the per-stem Wiener filter

.. math:: D(x, \sigma)_k = \mathcal F^{-1}\Big[\frac{P_k(f)}{P_k(f) + \sigma^2}\,\mathcal F[x_k]\Big],

and the posterior of the stems given their sum is Gaussian with mean
:func:`~mgdm_audio.audio.spectra.wiener_separation` and samples
:func:`~mgdm_audio.audio.spectra.wiener_posterior_sample`. With ``pad = 0`` (the default) every filter is circular
over the chunk: the prior is then a *circular* stationary process on the chunk, and denoiser, posterior mean and
posterior samples are all exact for it; the denoiser is symmetric with norm <= 1. (Reflect padding would soften
the chunk edges but is not a contraction, and samplers that apply the denoiser repeatedly, like MGDM's Gibbs
sweeps, amplify the excess: see :func:`~mgdm_audio.audio.spectra.filter_by_gain`.)

Plugged into any sampler in place of a trained prior it tests the sampler on real mixtures against a known answer:
the audio counterpart of the Gaussian-mixture benchmark (``evaluation/separation/gaussian_testbed.py``). It is not
a good music prior; it is what a prior must beat to have learnt more than each stem's average spectrum.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor

from mgdm_audio.audio.model import SpectralSkip, SpectralSkipConfig, UNetConfig
from mgdm_audio.audio.priors import AudioPrior
from mgdm_audio.core.denoiser import batch_sigma
from mgdm_audio.core.edm import EDMConfig, EDMPreconditioned
from mgdm_audio.core.errors import UserInputError

__all__ = ["GaussianStemDenoiser", "gaussian_stem_prior"]


class GaussianStemDenoiser(EDMPreconditioned):
    """``D(x, sigma) = W_sigma x`` with the fitted PSDs ``psd (S, bins)``; no network, no clamp. The EDM config only
    supplies the noise-level table (``levels``) that index-based samplers read and ``unet_config`` only the input
    length rule, so both match the prior it stands in for."""

    def __init__(self, psd: Tensor, edm: EDMConfig, unet_config: UNetConfig, pad: int = 0) -> None:
        super().__init__(edm)
        self.unet_config = unet_config
        if psd.ndim != 2 or psd.shape[-1] < 2 or not bool(torch.isfinite(psd).all()) or bool((psd <= 0).any()):
            raise UserInputError(
                f"a Gaussian stem prior needs positive finite PSDs (S, bins >= 2), got {tuple(psd.shape)}."
            )
        self.spectral = SpectralSkip(psd.shape[0], edm.sigma_data, SpectralSkipConfig(bins=psd.shape[-1], pad=pad))
        self.spectral.psd.copy_(psd.to(self.spectral.psd))

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = batch_sigma(sigma, x).to(x.dtype)
        return self.spectral(x, s)


def gaussian_stem_prior(psd: Tensor, like: AudioPrior, pad: int = 0) -> AudioPrior:
    """An :class:`AudioPrior` with ``like``'s stems, sample rate, chunk length and noise-level table whose
    denoiser is :class:`GaussianStemDenoiser` with ``psd``."""
    if psd.shape[0] != len(like.stems):
        raise UserInputError(f"{psd.shape[0]} PSDs for a prior with {len(like.stems)} stems ({', '.join(like.stems)}).")
    module = GaussianStemDenoiser(psd.float(), like.module.edm, like.module.unet_config, pad)
    digest = hashlib.sha256(psd.detach().cpu().double().contiguous().numpy().tobytes()).hexdigest()
    return AudioPrior(
        module=module,  # type: ignore[arg-type]
        stems=tuple(like.stems),
        sample_rate=like.sample_rate,
        chunk_samples=like.chunk_samples,
        # the separator reads the input gain (mix_rms) from here: keep the replaced prior's metadata
        config={"name": "gaussian-stems", "metadata": {**like.config.get("metadata", {}), "psd_sha256": digest}},
        weights_sha256=digest,
        path=Path("gaussian-stems"),
    )
