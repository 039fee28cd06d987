"""No sampler reads its state back to the host once per step (on a GPU every such read is a synchronisation).

The state is tagged with a tensor subclass that every torch operation propagates; converting a tagged tensor to a
Python value (``bool``, ``float``, ``int``, ``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``) is counted where
package code does it. Branches that only run on CPU (DAPS's NaN fast path, ``x.device.type == "cpu"``) are excluded:
their device path is what ``evaluation/gpu_check.sh`` measures on a GPU.
"""

from __future__ import annotations

import collections
import traceback

import pytest
import torch

from mgdm_audio.audio.separation import SumOfStems
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.rng import make_generator
from mgdm_audio.samplers.registry import get_sampler, sampler_names
from tests.audio_priors_for_tests import BandPrior

HOST_READS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy"}
READS: collections.Counter[str] = collections.Counter()
CPU_ONLY = {"daps"}  # its per-step NaN check runs only when the state is on the CPU


class DeviceState(torch.Tensor):
    """A CPU tensor standing for device memory: host reads of it (or of anything computed from it) are counted."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            frames = [f for f in traceback.extract_stack()[:-1] if "mgdm_audio" in f.filename]
            if frames:
                READS[f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}"] += 1
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("name", [n for n in sampler_names() if n not in CPU_ONLY])
def test_sampler_reads_its_state_on_the_host_at_most_twice_per_run(name: str) -> None:
    spec = get_sampler(name)
    config = spec.config("fast" if "fast" in spec.presets else "default")
    if hasattr(config, "start_scale"):
        config.start_scale = "vp"
    prior, t = BandPrior(sample_rate=8000, chunk_samples=2048), 2048
    torch.manual_seed(0)
    problem = InverseProblem(SumOfStems(4, t), (0.1 * torch.randn(2, 1, t)).as_subclass(DeviceState), 1e-4)
    x_init = torch.randn(2, 4, t).as_subclass(DeviceState)
    spec.check(problem, config)
    READS.clear()
    result = spec.run(prior, problem, x_init, generator=make_generator(0), config=config)
    assert isinstance(result.samples, DeviceState)  # the tag reached the output: the whole run was observed
    assert result.nfe > 2 and sum(READS.values()) <= 2, dict(READS)
