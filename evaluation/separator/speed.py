"""Size and speed of the discriminative separator's CPU configuration (issue 24: <= 20 M parameters, real-time factor
<= 0.5 on 2 idle cores).

Builds the recipe's network (``recipes/separator/slakh-diverse-htdemucs-small.yaml``; the weights do not change the
time), then times on ``--threads`` threads: one forward pass on 1 x 1 x chunk (1.49 s, the training length; in eval
mode the network takes at most that per call) and :func:`~mgdm_audio.audio.discriminative.estimate` on
1 x 1 x ``--seconds`` (windows of the chunk, 25 % overlap, as the separator runs). Prints the median of ``--repeats``
timings after one warm-up, the real-time factors and the 1-minute load average (the machine is shared: a load above
the thread count slows every number here).

    OMP_NUM_THREADS=2 python evaluation/separator/speed.py [--threads 2] [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import yaml

from mgdm_audio.audio.discriminative import build_separator, estimate
from mgdm_audio.metrics.timing import median_seconds

RECIPE = Path(__file__).resolve().parents[2] / "recipes/separator/slakh-diverse-htdemucs-small.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kwargs = yaml.safe_load(RECIPE.read_text())["model"]["kwargs"]
    model = build_separator(**kwargs).eval().requires_grad_(False)
    sr, chunk = model.sample_rate, model.chunk_samples
    params = sum(p.numel() for p in model.parameters())
    one = torch.randn(1, 1, chunk, generator=torch.Generator().manual_seed(0)) * 0.08
    long = torch.randn(1, 1, round(args.seconds * sr), generator=torch.Generator().manual_seed(1)) * 0.08
    with torch.no_grad():
        t_chunk = median_seconds(lambda: model(one), args.repeats)
        t_long = median_seconds(lambda: estimate(model, long), args.repeats)
    print(
        f"parameters: {params} ({params / 1e6:.2f} M); threads: {args.threads}; load average: {os.getloadavg()[0]:.2f}"
    )
    print(f"forward 1x1x{chunk} ({chunk / sr:.2f} s): {t_chunk:.3f} s, real-time factor {t_chunk * sr / chunk:.3f}")
    print(
        f"estimate 1x1x{long.shape[-1]} ({args.seconds:g} s): {t_long:.3f} s, "
        f"real-time factor {t_long / args.seconds:.3f}"
    )


if __name__ == "__main__":
    main()
