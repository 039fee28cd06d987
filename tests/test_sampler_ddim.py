"""The DDIM chain that DDIM, DPS and ΠGDM share (:func:`mgdm_audio.samplers.ddim.ddim_chain`): its guidance term
adds exactly ``w * grad(phi)`` per chain on top of the plain DDIM steps, with one VJP per guided step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mgdm_audio.core.denoiser import CountingDenoiser
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.samplers.ddim import Guidance, ddim_chain

N_STEPS, CHAINS, DIM = 10, 4, 8


def _run(guidance: Guidance | None, states: list[dict[str, Any]] | None = None) -> tuple[Tensor, int, int]:
    prior = GaussianMixture.grid25(DIM, torch.Generator().manual_seed(0)).denoiser()
    counter = CountingDenoiser(prior, unit_batch=CHAINS)
    x_init = torch.randn(CHAINS, DIM, generator=torch.Generator().manual_seed(1))
    callback = None if states is None else states.append
    out = ddim_chain(counter, x_init, torch.Generator().manual_seed(2), N_STEPS, 1.0, callback, guidance)
    return out, counter.nfe, counter.vjp


def _potential(weight: float | Tensor) -> Guidance:
    def guidance(x0: Tensor, abar_k: Tensor, abar_next: Tensor) -> tuple[Tensor, float | Tensor, dict[str, Any]]:
        return -(x0**2).sum(), weight, {"abar": float(abar_k)}

    return guidance


def test_zero_weight_reproduces_plain_ddim_and_pays_one_vjp_per_step() -> None:
    plain, nfe, vjp = _run(None)
    assert (nfe, vjp) == (N_STEPS - 1, 0)
    for weight in (0.0, torch.zeros(CHAINS)):
        guided, nfe, vjp = _run(_potential(weight))
        assert torch.equal(guided, plain)
        assert (nfe, vjp) == (N_STEPS - 1, N_STEPS - 2)


def test_per_chain_weight_moves_only_the_weighted_chains_and_reaches_the_callback() -> None:
    plain, _, _ = _run(None)
    states: list[dict[str, Any]] = []
    guided, _, _ = _run(_potential(torch.tensor([0.0, 0.5, 0.0, 0.5])), states)
    assert torch.equal(guided[0::2], plain[0::2])
    assert (guided[1::2] - plain[1::2]).abs().min() > 1e-3
    assert [s["i"] for s in states] == list(range(N_STEPS - 2)) and all("abar" in s for s in states)
    assert [s["abar"] for s in states] == sorted(s["abar"] for s in states)  # increasing abar: noisy to clean
