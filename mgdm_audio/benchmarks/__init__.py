"""Benchmark engines (floor 3) on one harness (:mod:`mgdm_audio.benchmarks.harness`); drivers and tables live in
evaluation/.

An engine is a module with ``PLOT`` (what its ``--plot`` draws), ``add_arguments(parser)`` (its own flags) and
``run(args) -> Report`` (or ``None`` on a ``torchrun`` rank other than 0). ``mgdm-audio benchmark NAME`` runs the
engine registered here under ``NAME`` with its one-line help; a new engine is one module and one line below. The
table is read without importing any engine, so that the command line's help loads no torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: name -> (module, one-line help)
ENGINES: dict[str, tuple[str, str]] = {
    "gmm": ("mgdm_audio.benchmarks.gmm", "exact-posterior benchmark on a 25-component Gaussian mixture"),
    "separation": (
        "mgdm_audio.benchmarks.separation",
        "SI-SDRi (and BSSEval SDR) of samplers and oracles on test chunks",
    ),
    "paper-audio": (
        "mgdm_audio.benchmarks.paper_audio",
        "the papers' Slakh2100 protocol: 262144-sample chunks, pooled SI-SDRi",
    ),
    "image": (
        "mgdm_audio.benchmarks.image",
        "PSNR / SSIM of every sampler on the ten image tasks (Fashion-MNIST test)",
    ),
}


def load_engine(name: str) -> ModuleType:
    return importlib.import_module(ENGINES[name][0])
