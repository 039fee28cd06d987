"""Image inverse problems: the forward operators of the MGDM reference code's image tasks, at any image size.

The operators are imported on first use (:mod:`mgdm_audio.lazy`): :mod:`mgdm_audio.image.tasks` loads without torch.
"""

from mgdm_audio.image.tasks import TASKS
from mgdm_audio.lazy import lazy_attributes

_OPERATORS = ("JPEG", "GaussianBlur", "HighDynamicRange", "InpaintCenterBox", "MotionBlur", "NonlinearBlur")
_OPERATORS += ("OutpaintRightHalf", "PhaseRetrieval", "SuperResolution", "make_operator", "motion_kernel")
__getattr__ = lazy_attributes(__name__, dict.fromkeys(_OPERATORS, "operators"))
__all__ = ["TASKS", *_OPERATORS]
