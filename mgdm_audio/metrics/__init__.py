"""Scores: sliced Wasserstein (exact-posterior benchmark); audio and image metrics live beside it."""

from mgdm_audio.metrics.sisdr import (
    SISDRiResult,
    ideal_binary_mask,
    ideal_ratio_mask,
    is_silent,
    mixture_baseline,
    si_sdri_windows,
    si_snr,
    windows,
)
from mgdm_audio.metrics.sliced_wasserstein import sliced_wasserstein, wasserstein_1d

__all__ = [
    "SISDRiResult",
    "ideal_binary_mask",
    "ideal_ratio_mask",
    "is_silent",
    "mixture_baseline",
    "si_sdri_windows",
    "si_snr",
    "sliced_wasserstein",
    "wasserstein_1d",
    "windows",
]
