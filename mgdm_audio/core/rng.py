"""Seeded randomness: every public entry point takes a seed or a ``torch.Generator``."""

from __future__ import annotations

import torch
from torch import Tensor


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise with ``x``'s shape, dtype and device, drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
