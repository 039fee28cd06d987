"""Median wall time of one ``small`` denoiser call on 1 x 4 x 65536 samples (2 CPU threads).

    python evaluation/prior/bench_denoiser.py [--config small] [--threads 2] [--repeats 7] [--prior NAME_OR_DIR]

Reports the forward pass (``D(x, sigma)`` under ``no_grad``) and the VJP (forward plus backward to the
input, what gradient-based samplers pay), plus the parameter count. With ``--prior`` the trained weights
are loaded (timings do not depend on the values).
"""

from __future__ import annotations

import argparse

import torch

from mgdm_audio.audio.model import build_prior, count_parameters
from mgdm_audio.metrics.timing import denoiser_call_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--prior", default=None, help="load a trained prior instead of a fresh config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--length", type=int, default=65536)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.prior:
        from mgdm_audio.audio.priors import load_prior

        module = load_prior(args.prior).module
    else:
        torch.manual_seed(0)
        module = build_prior(args.config).eval().requires_grad_(False)
    x = 0.05 * torch.randn(1, 4, args.length, generator=torch.Generator().manual_seed(0))

    seconds = denoiser_call_seconds(module, x, 0.5, args.repeats)
    fwd, back = seconds["forward_s"], seconds["vjp_s"]
    print(
        f"config {args.prior or args.config}: {count_parameters(module):,} parameters, 1 x 4 x {args.length}, "
        f"{args.threads} threads, median of {args.repeats}"
    )
    print(f"forward: {1000 * fwd:.1f} ms   forward+backward to the input (VJP): {1000 * back:.1f} ms")


if __name__ == "__main__":
    main()
