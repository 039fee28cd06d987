"""Which posterior mode does each chain land in? One validation problem of the GMM benchmark, one line per sampler.

    python evaluation/gmm/mode_weights.py 80 2 4 [--overrides '{"x0_candidates": 4}' ...]

Each sample is assigned to the component of the exact posterior mixture with the largest responsibility; the line
gives the total-variation distance between the chains' component fractions and the exact posterior weights, the
fractions on the four heaviest components, and, inside the heaviest one, the error of the sample mean and the
sample variance over the exact one (all coordinates, and along each row of A). Samplers: `mgdm:gmm`, `dps`, and
`mgdm:gmm` with each ``--overrides`` JSON object. Validation seeds (never the test suite's).
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import Tensor

from mgdm_audio.benchmarks.gmm import VALIDATION_SEED_BASE, entry, make_problem, sample_entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dim", type=int)
    parser.add_argument("dim_y", type=int)
    parser.add_argument("problem", type=int)
    parser.add_argument("--overrides", action="append", default=[], help="JSON overrides of mgdm:gmm (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    p = make_problem(args.dim, args.dim_y, args.problem, 1000, 100, VALIDATION_SEED_BASE)
    post = p.mixture.posterior(p.matrix, p.y, p.sigma_y)
    weights = post.log_weights.exp()
    top = weights.argsort(descending=True)[:4]
    precision = torch.linalg.inv(post.cov)
    a = p.matrix.double()

    def report(name: str, x: Tensor) -> None:
        diff = x.double()[:, None, :] - post.means[None]
        component = (post.log_weights[None] - 0.5 * torch.einsum("nkd,de,nke->nk", diff, precision, diff)).argmax(1)
        frac = torch.bincount(component, minlength=len(weights)).double() / len(component)
        tv = 0.5 * float((frac - weights).abs().sum())
        inside = x[component == top[0]].double()
        line = f"{name:44s} TV {tv:.3f}  fractions {[round(float(frac[c]), 3) for c in top]}"
        if len(inside) > 5:
            mean_err = float((inside.mean(0) - post.means[top[0]]).norm())
            var_ratio = float(inside.var(0).mean() / post.cov.diagonal().mean())
            along_a = (inside @ a.T).var(0) / torch.diagonal(a @ post.cov @ a.T)
            line += f"  mean error {mean_err:.2f}  variance ratio {var_ratio:.2f} (along A: "
            line += ", ".join(f"{v:.2f}" for v in along_a.tolist()) + ")"
        print(line, flush=True)

    print("exact posterior weights (heaviest 4):", [(int(c), round(float(weights[c]), 3)) for c in top])
    report("exact (a second exact sample set)", p.reference)
    entries = [entry("mgdm", "gmm"), entry("dps")]
    entries += [entry("mgdm", "gmm", json.loads(o), label=f"mgdm:gmm {o}") for o in args.overrides]
    for run in entries:
        report(run.name, sample_entry(run, p, 1000).samples)


if __name__ == "__main__":
    main()
