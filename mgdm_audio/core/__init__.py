"""Modality-free core: schedules, denoiser protocol and adapters, bridge kernels, operators,
likelihoods and cost accounting. Nothing here knows about audio or images.

The names below are imported on first use (:mod:`mgdm_audio.lazy`): ``errors``, ``atomic``, ``outputs`` and
``threads`` load without torch.
"""

from mgdm_audio.lazy import lazy_attributes

_WHERE = {
    **dict.fromkeys(("bridge_coefficients", "bridge_mean_std", "ddim_step", "sample_bridge"), "bridge"),
    **dict.fromkeys(("CountingDenoiser", "Denoiser", "VEDenoiser", "VPEpsDenoiser", "VPVDenoiser"), "denoiser"),
    "vp_denoise": "denoiser",
    "InternalError": "errors",
    "UserInputError": "errors",
    "InverseProblem": "likelihood",
    **dict.fromkeys(("LinearOperator", "MatrixOperator", "Operator", "SVDPieces"), "operators"),
    **dict.fromkeys(("NoiseLevels", "karras_sigmas"), "schedules"),
}
__getattr__ = lazy_attributes(__name__, _WHERE)
__all__ = sorted(_WHERE)
