"""Audio inverse problems: stem sets and the mixing operator of music source separation."""

from mgdm_audio.audio.separation import (
    MUSDB4,
    SLAKH4,
    STEM_SETS,
    MixtureInpainting,
    MixtureWithKnownStems,
    StemImputation,
    StemSet,
    SumOfStems,
    get_stem_set,
)

__all__ = [
    "MUSDB4",
    "SLAKH4",
    "STEM_SETS",
    "MixtureInpainting",
    "MixtureWithKnownStems",
    "StemImputation",
    "StemSet",
    "SumOfStems",
    "get_stem_set",
]
