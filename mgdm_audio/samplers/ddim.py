r"""Unconditional DDIM(eta) sampling (Song et al. 2021), as in the MGDM reference's ``ddim()``.

On the grid ``ts = floor(linspace(0, T - 1, N))`` it steps ``ts[N-1] -> ... -> ts[1]`` with the
bridge kernel ``x_{k'} ~ q_eta(x_{k'} | x0 = D_k(x_k), x_k)`` and returns ``D_{ts[1]}(x)``.
The start is ``x_T = sqrt(1 - abar[ts[-1]]) * x_init`` in VP coordinates (the run's ``start_scale="vp"``,
:mod:`mgdm_audio.samplers.run`) or plain ``x_init`` (``"unit"``, the reference's image convention).
Cost: ``N - 1`` NFE, no VJP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.core.bridge import ddim_step
from mgdm_audio.core.denoiser import CountingDenoiser, vp_denoise
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.samplers.base import Callback, SamplerSpec, notify, sampler, vp_schedule, vp_start


@dataclass
class DDIMConfig:
    n_steps: int = 100
    eta: float = 1.0


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
    abar = prior.levels.abar
    ts, cut = vp_schedule(prior, config.n_steps)
    top = config.n_steps - 1 - cut  # the first index of ts visited
    x = vp_start(prior, x_init, abar[ts[top]])
    with torch.no_grad():
        for i in range(top, 1, -1):
            k, k_next = ts[i], ts[i - 1]
            x0 = vp_denoise(prior, x, abar[k])
            x = ddim_step(x, x0, abar[k], abar[k_next], config.eta, generator)
            notify(callback, i=top - i, total=top, x=x, x0=x0)
        return vp_denoise(prior, x, abar[ts[1]])


SPEC = SamplerSpec(
    name="ddim",
    run=ddim,
    config_cls=DDIMConfig,
    presets={"fast": {"n_steps": 20}, "paper-audio": {}},
    needs_problem=False,
    warm_start=True,
    summary="unconditional DDIM(eta) sampling from the prior (ignores the observation)",
)
