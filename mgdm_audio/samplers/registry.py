"""The sampler registry: names, presets and requirements of every sampler in this package."""

from __future__ import annotations

import importlib

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.samplers.base import SamplerSpec

SAMPLER_MODULES: dict[str, str] = {
    "mgdm": "mgdm_audio.samplers.mgdm",
    "vml_map": "mgdm_audio.samplers.vml_map",
    "dps": "mgdm_audio.samplers.dps",
    "pigdm": "mgdm_audio.samplers.pigdm",
    "diffpir": "mgdm_audio.samplers.diffpir",
    "ddrm": "mgdm_audio.samplers.ddrm",
    "reddiff": "mgdm_audio.samplers.reddiff",
    "daps": "mgdm_audio.samplers.daps",
    "pnpdm": "mgdm_audio.samplers.pnpdm",
    "ddim": "mgdm_audio.samplers.ddim",
    "msdm": "mgdm_audio.samplers.msdm",
}


def sampler_names() -> list[str]:
    return list(SAMPLER_MODULES)


def get_sampler(name: str) -> SamplerSpec:
    """The :class:`SamplerSpec` registered under ``name`` (one clear error for an unknown name)."""
    if name not in SAMPLER_MODULES:
        raise UserInputError(f"unknown sampler '{name}'; choose one of: {', '.join(SAMPLER_MODULES)}.")
    return importlib.import_module(SAMPLER_MODULES[name]).SPEC
