"""A trivial sampler for the plug-in test (one file; registered by one line of the registry): one denoiser call
from the top of an ``n_steps`` grid, ``x0 = D(x_T)`` with ``x_T`` the run's starting noise. It ignores the
observation (``needs_problem=False``): the prior's own one-step estimate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.core.denoiser import CountingDenoiser, vp_denoise
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.samplers.base import Callback, SamplerSpec, sampler, vp_start


@dataclass
class OneStepConfig:
    n_steps: int = 100


@sampler(OneStepConfig, needs_problem=False)
def one_step(
    prior: CountingDenoiser,
    problem: InverseProblem | None,
    x_init: Tensor,
    generator: torch.Generator | None,
    config: OneStepConfig,
    callback: Callback | None,
    info: dict[str, Any],
) -> Tensor:
    abar = prior.levels.abar[prior.levels.timesteps(config.n_steps)[-1]]
    with torch.no_grad():
        return vp_denoise(prior, vp_start(prior, x_init, abar), abar)


SPEC = SamplerSpec(
    name="one_step",
    run=one_step,
    config_cls=OneStepConfig,
    presets={"fast": {"n_steps": 10}},
    needs_problem=False,
    summary="one denoiser call from the top of the grid (test plug-in)",
)
