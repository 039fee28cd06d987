"""Scores: sliced Wasserstein (exact-posterior benchmark); audio and image metrics live beside it."""

from mgdm_audio.metrics.sliced_wasserstein import sliced_wasserstein, wasserstein_1d

__all__ = ["sliced_wasserstein", "wasserstein_1d"]
