r"""Seeded randomness: every public entry point takes a seed or a ``torch.Generator``.

Noise prefetch (CPU). torch's CPU generator is sequential, so a sampler's large standard normal draws run on one core
between network calls. :func:`randn_like` therefore prepares the *next* draw of the same shape and
:func:`start_prefetch` (called by :class:`~mgdm_audio.core.denoiser.CountingDenoiser` just before each network call)
makes it on a background thread while the network runs. A prefetched tensor is handed out only if it is exactly what
a direct draw would give:

* the background thread never touches the caller's generator: it draws from a private generator set to a snapshot
  of the caller's state (taken right after the previous draw) and returns the tensor with the state after it;
* a request takes the prefetched tensor only when its shape and dtype match and the caller's generator is still
  exactly at the snapshot (any other draw in between, e.g. a ``randint`` for MGDM's tau, changes the state and the
  prefetch is dropped); the caller's generator is then set to the state after the draw.

So the stream of numbers, and every seeded result, is bit-identical to drawing serially (tested); only *when* the
numbers are drawn changes. It applies to CPU tensors of at least :data:`PREFETCH_MIN_NUMEL` elements drawn from an
explicit CPU generator; ``MGDM_AUDIO_NOISE_PREFETCH=0`` turns it off. The prefetch thread draws serially (one core,
only while the network runs); when the thread count adapts to other processes' load (:mod:`mgdm_audio.core.threads`)
its CPU time counts as this process's own, not as a competitor's. Its effect on the sampler time outside the
network is measured in ``evaluation/results/separation_speed.md`` (the serial-noise rows).
"""

from __future__ import annotations

import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

#: Smaller draws are made directly (the bookkeeping would cost more than it hides).
PREFETCH_MIN_NUMEL = 65536


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


@dataclass
class _Pending:
    shape: torch.Size
    dtype: torch.dtype
    state: Tensor  # the caller's generator state the draw starts from
    future: Future[tuple[Tensor, Tensor]] | None = None  # (noise, generator state after the draw) once started


_lock = threading.Lock()
_pending: weakref.WeakKeyDictionary[torch.Generator, _Pending] = weakref.WeakKeyDictionary()
_executor: ThreadPoolExecutor | None = None


def _reset_after_fork() -> None:  # a forked child has no prefetch thread: start afresh
    global _lock, _pending, _executor
    _lock, _pending, _executor = threading.Lock(), weakref.WeakKeyDictionary(), None


os.register_at_fork(after_in_child=_reset_after_fork)


def prefetch_enabled() -> bool:
    return os.environ.get("MGDM_AUDIO_NOISE_PREFETCH", "1") != "0"


def _draw_from_state(state: Tensor, shape: torch.Size, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    g = torch.Generator()
    g.set_state(state)
    noise = torch.randn(shape, generator=g, dtype=dtype)
    return noise, g.get_state()


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise with ``x``'s shape, dtype and device, drawn from ``generator``: the same numbers as
    ``torch.randn(x.shape, generator=generator, ...)`` (see the module docstring for the prefetch)."""
    if (
        generator is None
        or generator.device.type != "cpu"
        or x.device.type != "cpu"
        or x.numel() < PREFETCH_MIN_NUMEL
        or not prefetch_enabled()
    ):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    with _lock:
        pending = _pending.pop(generator, None)
    if (
        pending is not None
        and pending.future is not None
        and pending.shape == x.shape
        and pending.dtype == x.dtype
        and torch.equal(generator.get_state(), pending.state)
    ):
        noise, after = pending.future.result()
        generator.set_state(after)
    else:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    with _lock:
        _pending[generator] = _Pending(x.shape, x.dtype, generator.get_state())
    return noise


def start_prefetch() -> None:
    """Start the prepared draws (see the module docstring); a no-op when none waits."""
    global _executor
    with _lock:
        for pending in list(_pending.values()):
            if pending.future is None:
                if _executor is None:
                    _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mgdm-audio-noise")
                pending.future = _executor.submit(_draw_from_state, pending.state, pending.shape, pending.dtype)
