r"""Unconditional DDIM(eta) sampling (Song et al. 2021), as in the MGDM reference's ``ddim()``.

On the grid ``ts = floor(linspace(0, T - 1, N))`` it steps ``ts[N-1] -> ... -> ts[1]`` with the
bridge kernel ``x_{k'} ~ q_eta(x_{k'} | x0 = D_k(x_k), x_k)`` and returns ``D_{ts[1]}(x)``.
The start is ``x_T = sqrt(1 - abar[ts[-1]]) * x_init`` in VP coordinates (the run's ``start_scale="vp"``,
:mod:`mgdm_audio.samplers.run`) or plain ``x_init`` (``"unit"``, the reference's image convention).
Cost: ``N - 1`` NFE, no VJP.

:func:`ddim_chain` is this loop with an optional gradient guidance term; DPS and ΠGDM are that chain with
their own potential (:mod:`mgdm_audio.samplers.dps`, :mod:`mgdm_audio.samplers.pigdm`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.core.bridge import ddim_step
from mgdm_audio.core.denoiser import CountingDenoiser, expand_as_batch, vp_denoise
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.samplers.base import Callback, SamplerSpec, notify, sampler, vp_schedule, vp_start


@dataclass
class DDIMConfig:
    n_steps: int = 100
    eta: float = 1.0


Guidance = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor | float, dict[str, Any]]]
"""``guidance(x0, abar_k, abar_k') -> (phi, w, extra)``: a potential ``phi`` of the denoised state (summed over
chains, differentiable back to ``x_k``), its weight ``w`` (a number or a per-chain ``(B,)`` tensor) and extra
values for the progress callback."""


def ddim_chain(
    prior: CountingDenoiser,
    x_init: Tensor,
    generator: torch.Generator | None,
    n_steps: int,
    eta: float,
    callback: Callback | None,
    guidance: Guidance | None = None,
) -> Tensor:
    r"""DDIM(eta) over the grid ``ts`` of ``n_steps`` points, optionally guided, then ``D_{ts[1]}(x)``.

    For ``i = N-1 .. 2``, ``k = ts[i]``, ``k' = ts[i-1]``:

    .. math::
        \hat x_0 = D_k(x_k), \qquad (\phi, w) = \mathrm{guidance}(\hat x_0, \bar\alpha_k, \bar\alpha_{k'}),

        x_{k'} \sim q_{\eta}(x_{k'} \mid \hat x_0, x_k), \qquad x_{k'} \leftarrow x_{k'} + w\, \nabla_{x_k} \phi.

    Without ``guidance`` the term is absent (plain DDIM, no VJP); with it, each step costs one VJP through the
    denoiser. Cost: ``N - 1`` NFE cold; a warm start (:func:`~mgdm_audio.samplers.base.vp_schedule`) runs only the
    levels below its own.
    """
    abar = prior.levels.abar
    ts, cut = vp_schedule(prior, n_steps)
    top = n_steps - 1 - cut  # the first index of ts visited (a warm start skips the levels above its own)
    x = vp_start(prior, x_init, abar[ts[top]]).detach()
    for i in range(top, 1, -1):
        k, k_next = ts[i], ts[i - 1]
        extra: dict[str, Any] = {}
        if guidance is None:
            with torch.no_grad():
                x0 = vp_denoise(prior, x, abar[k])
        else:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                x0 = vp_denoise(prior, xg, abar[k])
                potential, weight, extra = guidance(x0, abar[k], abar[k_next])
                (grad,) = torch.autograd.grad(potential, xg)
        with torch.no_grad():
            x0 = x0.detach()
            x = ddim_step(x, x0, abar[k], abar[k_next], eta, generator)
            if guidance is not None:
                x = x + (expand_as_batch(weight, x) if isinstance(weight, Tensor) else weight) * grad
        notify(callback, i=top - i, total=top, x=x, x0=x0, **extra)
    with torch.no_grad():
        return vp_denoise(prior, x, abar[ts[1]])


@sampler(DDIMConfig, needs_problem=False)
def ddim(
    prior: CountingDenoiser,
    problem: InverseProblem | None,
    x_init: Tensor,
    generator: torch.Generator | None,
    config: DDIMConfig,
    callback: Callback | None,
    info: dict[str, Any],
) -> Tensor:
    return ddim_chain(prior, x_init, generator, config.n_steps, config.eta, callback)


SPEC = SamplerSpec(
    name="ddim",
    run=ddim,
    config_cls=DDIMConfig,
    presets={"fast": {"n_steps": 20}, "paper-audio": {}},
    needs_problem=False,
    warm_start=True,
    summary="unconditional DDIM(eta) sampling from the prior (ignores the observation)",
)
