"""A trivial benchmark engine for the plug-in test (one module; registered by one line of
``mgdm_audio.benchmarks.ENGINES``): each run spec draws ``--n-samples`` unconditional samples of a 2-d
Gaussian-mixture prior per problem, scored by the distance of their mean to the prior's mean. It keeps only its
problems and its score; the harness does the cache, the outputs and the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from mgdm_audio.benchmarks.harness import Report, cache_file, run_cells
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.rng import make_generator
from mgdm_audio.samplers.run import RunSpec, parse_run_specs, resolve, run_posterior

PLOT = "no plot"
COMPUTED: list[str] = []  # the cells this process computed (the test reads it to see what the cache served)


@dataclass(frozen=True)
class ToyCell:
    run: RunSpec
    problem: int
    n_samples: int

    @property
    def group(self) -> int:
        return self.problem

    @property
    def key(self) -> dict[str, Any]:
        return {"engine": "toy", **resolve(self.run).key(), "problem": self.problem, "n": self.n_samples}


def compute(cells: list[ToyCell]) -> list[list[dict[str, Any]]]:
    mixture = GaussianMixture.grid25(2, make_generator(cells[0].problem))
    out = []
    for cell in cells:
        COMPUTED.append(cell.run.name)
        result = run_posterior(mixture.denoiser(), None, resolve(cell.run), cell.n_samples, cell.problem, x_shape=(2,))
        mean = (mixture.log_weights.exp()[:, None] * mixture.means).sum(0)
        error = float((result.samples.double().mean(0) - mean).norm())
        out.append([{"problem": cell.problem, "error": error, "nfe": result.nfe}])
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samplers", required=True, metavar="[NAME=]S[:PRESET[:k=v]],...")
    parser.add_argument("--n-samples", type=int, default=64)


def run(args: argparse.Namespace) -> Report:
    runs = parse_run_specs(args.samplers)
    cells = [ToyCell(r, p, args.n_samples) for p in (1, 2) for r in runs]
    results = run_cells(cells, compute, cache_file(args.cache), progress=False)
    assert results is not None
    rows = [{"sampler": c.run.name, **r[0]} for c, r in zip(cells, results, strict=True)]
    text = "\n".join(f"| {r['sampler']} | {r['problem']} | {r['error']:.4f} |" for r in rows)
    return Report({"rows": rows}, text)
