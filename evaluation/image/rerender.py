"""Re-derive an image benchmark's summary (average ranks and their bootstrap intervals over the images) and its
Markdown from the per-image rows of a committed JSON document, without re-running any sampler.

    python evaluation/image/rerender.py evaluation/results/image_pixel.json --date 2026-11-25 \
        --markdown evaluation/results/image_pixel.md

The rows are kept as they are; the summary is recomputed by the engine's own ``payload`` (so it carries whatever the
engine's summary holds now, e.g. the bootstrap of the ranks) and written back to the JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mgdm_audio.benchmarks.harness import provenance_markdown
from mgdm_audio.benchmarks.image import markdown_report, payload
from mgdm_audio.core.atomic import write_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="a document written by `mgdm-audio benchmark image --json`")
    parser.add_argument("--markdown", type=Path, required=True, help="where to write the tables")
    parser.add_argument("--date", default=None, help="the date the rows were computed (default: today)")
    args = parser.parse_args()
    old = json.loads(args.json.read_text())
    document = payload(old["rows"], old["settings"])
    extra = {k: v for k, v in old.items() if k not in document}  # provenance, command: kept
    write_atomic(args.json, json.dumps({**document, **extra}, indent=1) + "\n")
    # the rows' provenance (the run that computed them), when the document has one: re-rendering keeps it
    footer = provenance_markdown(old["provenance"]) if "provenance" in old else ""
    write_atomic(args.markdown, markdown_report(document, args.date) + footer)


if __name__ == "__main__":
    main()
