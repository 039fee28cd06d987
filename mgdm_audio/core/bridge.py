r"""The bridge kernel ``q_eta(x_t | x_s, x_l)`` for ``s <= t <= l``: the one implementation that
every sampler uses (DDPM posterior, DDIM steps, MGDM's noising and potential steps).

In VP coordinates with ``a_{u->v} = abar_v / abar_u`` (computed in float64):

.. math::
    \mathrm{std}(\eta) = \eta \sqrt{(1 - a_{t\to l})(1 - a_{s\to t}) / (1 - a_{s\to l})}, \quad
    c_l = \sqrt{(1 - a_{s\to t} - \mathrm{std}^2)/(1 - a_{s\to l})}, \quad
    c_s = \sqrt{a_{s\to t}} - c_l \sqrt{a_{s\to l}},

    q_\eta(x_t \mid x_s, x_l) = \mathcal N(c_l x_l + c_s x_s,\ \mathrm{std}^2 I).

``eta = 1`` is the exact Markov-chain posterior; ``eta = 0`` is deterministic DDIM. With
``s = 0`` (``abar_s = 1``, ``x_s = x0``) it is the DDPM/DDIM step from ``l`` to ``t``.
Degenerate cases: ``t = s`` gives ``x_s``; ``t = l`` gives ``x_l``.

Every ``abar`` may be a float, a 0-d tensor or a per-chain ``(B,)`` tensor.
:func:`sample_bridge_ve` is the same kernel in VE coordinates (``x_ve = x_vp / sqrt(abar)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mgdm_audio.core.denoiser import expand_as_batch
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.rng import randn_like

Level = Tensor | float


def _f64(v: Level, device: torch.device | None = None) -> Tensor:
    return torch.as_tensor(v, dtype=torch.float64, device=device)


def bridge_coefficients(abar_s: Level, abar_t: Level, abar_l: Level, eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(c_s, c_l, std)`` of ``q_eta(x_t | x_s, x_l)`` in float64 (see the module docstring)."""
    if not 0.0 <= eta <= 1.0:
        raise UserInputError(f"the bridge parameter eta must lie in [0, 1], got {eta}.")
    a_s, a_t, a_l = _f64(abar_s), _f64(abar_t), _f64(abar_l)
    a_st, a_sl, a_tl = a_t / a_s, a_l / a_s, a_l / a_t
    denom = 1.0 - a_sl
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    var = torch.where(denom > 0, (1.0 - a_tl) * (1.0 - a_st) / safe, torch.zeros_like(denom))
    std = eta * var.clamp(min=0).sqrt()
    c_l = torch.where(denom > 0, ((1.0 - a_st - std**2) / safe).clamp(min=0).sqrt(), torch.zeros_like(denom))
    c_s = a_st.sqrt() - c_l * a_sl.sqrt()
    return c_s, c_l, std


def bridge_mean_std(
    x_s: Tensor, x_l: Tensor, abar_s: Level, abar_t: Level, abar_l: Level, eta: float
) -> tuple[Tensor, Tensor]:
    """Mean (x's dtype) and std (broadcastable, x's dtype) of ``q_eta(x_t | x_s, x_l)``."""
    c_s, c_l, std = bridge_coefficients(abar_s, abar_t, abar_l, eta)
    cl, cs = expand_as_batch(c_l.to(x_l.device), x_l), expand_as_batch(c_s.to(x_s.device), x_s)
    if x_s.shape == x_l.shape:  # the common case: one new tensor, updated in place
        mean = torch.mul(x_l, cl).addcmul_(x_s, cs)
    else:
        mean = cl * x_l + cs * x_s
    return mean, expand_as_batch(std.to(x_l.device), x_l)


def sample_bridge(
    x_s: Tensor,
    x_l: Tensor,
    abar_s: Level,
    abar_t: Level,
    abar_l: Level,
    eta: float,
    generator: torch.Generator | None,
) -> Tensor:
    """One draw from ``q_eta(x_t | x_s, x_l)``; no noise is drawn when ``std = 0`` everywhere."""
    mean, std = bridge_mean_std(x_s, x_l, abar_s, abar_t, abar_l, eta)
    if not torch.any(std > 0):
        return mean
    return randn_like(mean, generator).mul_(std).add_(mean)


def ddim_step(
    x: Tensor, x0: Tensor, abar_from: Level, abar_to: Level, eta: float, generator: torch.Generator | None
) -> Tensor:
    """The DDIM(eta) step ``x_k -> x_k'`` given Tweedie's ``x0``: the bridge with ``s = 0``.

    Stepping to the clean level (``abar_to = 1``) returns ``x0`` exactly.
    """
    return sample_bridge(x0, x, 1.0, abar_to, abar_from, eta, generator)


def sample_bridge_ve(
    x_s: Tensor,
    x_l: Tensor,
    sigma_s: Level,
    sigma_t: Level,
    sigma_l: Level,
    eta: float,
    generator: torch.Generator | None,
) -> Tensor:
    """The same kernel for VE states ``x_u = x0 + sigma_u n`` (``x_vp = x_ve / sqrt(1 + sigma^2)``)."""
    a_s, a_t, a_l = (1.0 / (1.0 + _f64(s) ** 2) for s in (sigma_s, sigma_t, sigma_l))
    vp = sample_bridge(
        x_s * expand_as_batch(a_s.sqrt(), x_s), x_l * expand_as_batch(a_l.sqrt(), x_l), a_s, a_t, a_l, eta, generator
    )
    return vp * expand_as_batch(a_t.rsqrt(), vp)
