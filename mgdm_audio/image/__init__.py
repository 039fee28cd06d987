"""Image inverse problems: the forward operators of the MGDM reference code's image tasks, at any image size."""

from mgdm_audio.image.operators import (
    JPEG,
    TASKS,
    GaussianBlur,
    HighDynamicRange,
    InpaintCenterBox,
    MotionBlur,
    NonlinearBlur,
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
    "JPEG",
    "MotionBlur",
    "NonlinearBlur",
    "OutpaintRightHalf",
    "PhaseRetrieval",
    "SuperResolution",
    "make_operator",
    "motion_kernel",
]
