"""Benchmark engines (floor 3) on one harness (:mod:`mgdm_audio.benchmarks.harness`); drivers and tables live in
evaluation/.

An engine is a module with ``HELP`` (one line), ``PLOT`` (what its ``--plot`` draws),
``add_arguments(parser)`` (its own flags) and ``run(args) -> Report``
(or ``None`` on a ``torchrun`` rank other than 0). ``mgdm-audio benchmark NAME`` runs the engine registered here
under ``NAME``; a new engine is one module and one line below.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ENGINES: dict[str, str] = {
    "gmm": "mgdm_audio.benchmarks.gmm",
    "separation": "mgdm_audio.benchmarks.separation",
    "image": "mgdm_audio.benchmarks.image",
}


def load_engine(name: str) -> ModuleType:
    return importlib.import_module(ENGINES[name])
