"""Process-level settings for CPU inference.

:func:`keep_freed_memory` stops glibc's ``malloc`` from handing large blocks back to the kernel on every ``free``.
By default a block above the (adaptive) mmap threshold is ``mmap``-ed on allocation and ``munmap``-ed on release,
so a sampler step that holds two temporaries of a few MB at once pays one page fault per 4 KiB page of the second
on every call (an elementwise sum of three such tensors runs many times slower than with the blocks kept).
Raising the mmap and trim thresholds keeps freed blocks in the heap for reuse. The cost is that the process's
resident memory stays at its high-water mark instead of shrinking between chunks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import TYPE_CHECKING

from mgdm_audio.core.errors import UserInputError

if TYPE_CHECKING:  # torch loads when a device is resolved, not with the module: the CLI imports this before torch
    import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds (bytes); ``False`` (and nothing changed) off glibc/Linux."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def resolve_device(device: str | torch.device) -> torch.device:
    """The one device resolver of every job: ``auto`` is CUDA when present, else the CPU; a CUDA device that is
    not there, or a name torch does not know, is one clear error."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserInputError(f"--device must be auto, cpu or cuda[:N], got {device!r}.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {device} was asked for but no CUDA GPU is available; use --device cpu or auto.")
    return dev
