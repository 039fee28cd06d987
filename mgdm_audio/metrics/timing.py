"""Wall time of a denoiser call: the median of repeated calls after one warm-up.

Two costs per call on an input ``x``: the forward pass ``D(x, sigma)`` under ``no_grad`` (what every sampler step
pays) and the vector-Jacobian product, forward plus backward to the input (what gradient-based samplers pay).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def denoiser_call_seconds(module: nn.Module, x: Tensor, sigma: float, repeats: int) -> dict[str, float]:
    """Median seconds of one forward call of ``module(x, sigma)`` and of one VJP to ``x`` (``forward_s``,
    ``vjp_s``)."""

    def forward() -> None:
        with torch.no_grad():
            module(x, sigma)

    def vjp() -> None:
        xr = x.clone().requires_grad_(True)
        out = module(xr, sigma)
        torch.autograd.grad(out, xr, grad_outputs=torch.ones_like(out))

    return {"forward_s": median_seconds(forward, repeats), "vjp_s": median_seconds(vjp, repeats)}
