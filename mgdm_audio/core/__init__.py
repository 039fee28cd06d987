"""Modality-free core: schedules, denoiser protocol and adapters, bridge kernels, operators,
likelihoods and cost accounting. Nothing here knows about audio or images."""

from mgdm_audio.core.bridge import bridge_coefficients, bridge_mean_std, ddim_step, sample_bridge
from mgdm_audio.core.denoiser import (
    CountingDenoiser,
    Denoiser,
    VEDenoiser,
    VPEpsDenoiser,
    VPVDenoiser,
    vp_denoise,
)
from mgdm_audio.core.errors import InternalError, UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import LinearOperator, MatrixOperator, Operator, SVDPieces
from mgdm_audio.core.schedules import NoiseLevels, karras_sigmas

__all__ = [
    "CountingDenoiser",
    "Denoiser",
    "InverseProblem",
    "LinearOperator",
    "MatrixOperator",
    "NoiseLevels",
    "Operator",
    "SVDPieces",
    "InternalError",
    "UserInputError",
    "VEDenoiser",
    "VPEpsDenoiser",
    "VPVDenoiser",
    "bridge_coefficients",
    "bridge_mean_std",
    "ddim_step",
    "karras_sigmas",
    "sample_bridge",
    "vp_denoise",
]
