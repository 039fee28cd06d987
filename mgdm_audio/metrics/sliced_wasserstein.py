r"""Sliced Wasserstein-1 distance between two empirical distributions.

.. math:: SW_1(\mu, \nu) = \frac{1}{P} \sum_{p=1}^P W_1(\theta_p^\# \mu, \theta_p^\# \nu),
          \qquad \theta_p \sim \mathrm{Unif}(S^{d-1})

with ``P = 100`` normalised Gaussian directions (as in the MGDM reference). The 1-D distance is
exact: ``W_1 = \int |F_a(t) - F_b(t)| dt`` over the merged sorted support, so sample sets of
different sizes are allowed (it equals ``scipy.stats.wasserstein_distance``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def wasserstein_1d(a: Tensor, b: Tensor) -> Tensor:
    """Exact W1 between empirical measures, row by row: ``a (P, Na)``, ``b (P, Nb)`` -> ``(P,)``."""
    values = torch.cat([a, b], 1)
    steps = torch.cat([torch.full_like(a, 1.0 / a.shape[1]), torch.full_like(b, -1.0 / b.shape[1])], 1)
    order = values.argsort(1)
    v = values.gather(1, order)
    cdf_diff = steps.gather(1, order).cumsum(1)[:, :-1]
    return (cdf_diff.abs() * (v[:, 1:] - v[:, :-1])).sum(1)


def sliced_wasserstein(
    a: Tensor, b: Tensor, n_directions: int = 100, generator: torch.Generator | None = None
) -> float:
    """``SW_1`` between samples ``a (Na, d)`` and ``b (Nb, d)`` over ``n_directions`` random directions."""
    a2, b2 = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(f"sample sets of dimension {a2.shape[1]} and {b2.shape[1]} cannot be compared.")
    theta = torch.randn(a2.shape[1], n_directions, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    return float(wasserstein_1d((a2 @ theta).T, (b2 @ theta).T).mean())
