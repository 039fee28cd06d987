"""Choose GMM hyperparameters on VALIDATION problems (seeds disjoint from the test suite).

    python evaluation/gmm/tune.py evaluation/gmm/rounds/NN-topic/candidates.yaml \
        --markdown evaluation/gmm/rounds/NN-topic/results.md --problems 10

One folder per round, indexed in ``evaluation/gmm/rounds/README.md`` (the results cache is ``results.jsonl`` beside
the Markdown).

CANDIDATES.yaml lists sampler entries (``sampler``, ``preset``, ``overrides``, ``label``). The
problems use ``VALIDATION_SEED_BASE``, so nothing chosen here is tuned on the committed test table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from mgdm_audio.benchmarks.gmm import VALIDATION_SEED_BASE, Suite, entry, markdown_table, run_suite
from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", type=Path)
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--dims", default="8,80")
    parser.add_argument("--dims-y", default="1,2")
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    prov = script_provenance(None, "cpu")  # the exact GMM: no learnt prior; git state before the runs
    entries = [entry(**e) for e in yaml.safe_load(args.candidates.read_text())]
    suite = Suite(
        dims=tuple(int(v) for v in args.dims.split(",")),
        dims_y=tuple(int(v) for v in args.dims_y.split(",")),
        n_problems=args.problems,
        n_samples=args.samples,
        seed_base=VALIDATION_SEED_BASE,
    )
    cache = args.markdown.with_suffix(".jsonl")
    rows = run_suite(entries, suite, cache=cache, workers=args.workers)
    note = f"Validation problems (seed base {VALIDATION_SEED_BASE}); suite {json.dumps(suite.__dict__)}."
    args.markdown.write_text(
        markdown_table(rows, f"Validation: {args.candidates.name}", note) + provenance_markdown(prov)
    )
    print(args.markdown.read_text())


if __name__ == "__main__":
    main()
