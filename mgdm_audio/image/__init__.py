"""Image inverse problems: the forward operators of the reference's §6 tasks, at any image size."""

from mgdm_audio.image.operators import (
    TASKS,
    GaussianBlur,
    HighDynamicRange,
    InpaintCenterBox,
    MotionBlur,
    OutpaintRightHalf,
    PhaseRetrieval,
    SuperResolution,
    make_operator,
    motion_kernel,
)

__all__ = [
    "TASKS",
    "GaussianBlur",
    "HighDynamicRange",
    "InpaintCenterBox",
    "MotionBlur",
    "OutpaintRightHalf",
    "PhaseRetrieval",
    "SuperResolution",
    "make_operator",
    "motion_kernel",
]
