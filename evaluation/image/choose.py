"""Equal validation budget for the image samplers (issue 25): pick each sampler's point from the validation run.

The validation run (``evaluation/image/validation.md``, Fashion-MNIST *validation* images) gives every sampler the
same number of points: its ``fast`` preset and two more (MGDM: R = 2 Gibbs sweeps and ``paper-image``; each
competitor: two values of the setting it is most sensitive to, at ``fast``'s cost). Per sampler the point with the
highest mean PSNR over the tasks it runs is chosen (ties: the higher mean SSIM); every point tried is listed with its
mean PSNR, mean SSIM and cost. Each sampler's ``image`` preset is its point chosen with the pixel prior; the latent
prior's run (``validation_latent.md``, the same points) chooses again, and where its choice differs the sampler has an
``image-latent`` preset (``tests/test_image_presets.py`` holds both equal to the choice); ``--preset default`` of
``mgdm-audio benchmark image`` runs the one for the prior's kind.

    python evaluation/image/choose.py evaluation/image/validation.json --out evaluation/image/choice
    python evaluation/image/choose.py evaluation/image/validation_latent.json --out evaluation/image/choice_latent

Writes ``OUT.json`` (every point's means, the chosen label per sampler) and ``OUT.md``, both with the provenance of
this script's run; the numbers come from the validation JSON, whose own provenance it names.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean
from typing import Any


def point_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per sampler label: its method, preset, overrides, tasks run, and the mean over those tasks of the
    benchmark's per-task cells (:func:`mgdm_audio.benchmarks.image.cell_means`: mean PSNR / SSIM over the images,
    NFE, VJP, seconds per image)."""
    from mgdm_audio.benchmarks.image import cell_means

    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["status"] == "ok":
            first.setdefault(row["sampler"], row)
    points = []
    for label, by_task in cell_means(rows).items():
        cells = {task: c for task, c in by_task.items() if c["status"] == "ok"}
        if not cells:
            continue
        row = first[label]
        keys = ("psnr", "ssim", "nfe", "vjp", "seconds_per_image")
        mean = {key: fmean(float(c[key]) for c in cells.values()) for key in keys}
        points.append(
            {
                "label": label,
                "sampler": row["method"],
                "preset": row["preset"],
                "overrides": row["overrides"],
                "tasks": sorted(cells),
                "mean_psnr": mean["psnr"],
                "mean_ssim": mean["ssim"],
                "nfe": mean["nfe"],
                "vjp": mean["vjp"],
                "seconds_per_image": mean["seconds_per_image"],
            }
        )
    return points


def choose(points: list[dict[str, Any]]) -> dict[str, str]:
    """``{sampler: label}``: the point with the highest mean PSNR (then mean SSIM) among the sampler's points.
    Raises ``ValueError`` when the samplers were not given the same number of points or not the same tasks."""
    by_sampler: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        by_sampler[p["sampler"]].append(p)
    counts = {s: len(ps) for s, ps in by_sampler.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"unequal budgets: points per sampler {counts}")
    for s, ps in by_sampler.items():
        if len({tuple(p["tasks"]) for p in ps}) > 1:
            raise ValueError(f"the points of {s} ran on different tasks")
    return {s: max(ps, key=lambda p: (p["mean_psnr"], p["mean_ssim"]))["label"] for s, ps in by_sampler.items()}


def markdown(points: list[dict[str, Any]], chosen: dict[str, str], source: dict[str, Any]) -> str:
    lines = [
        "# Image samplers: the point chosen on validation images",
        "",
        f"Every point of `{source['path']}` (the validation run: prior `{source['prior']}`, {source['images']} "
        "Fashion-MNIST validation images, ten tasks), the mean over the tasks a sampler runs of its per-task mean PSNR "
        "(dB) and SSIM; per sampler the point with the highest mean PSNR is chosen (**bold**) and becomes its "
        f"`{source['preset']}` preset{source['preset_note']}. Each sampler had "
        f"{len(points) // max(len(chosen), 1)} points. NFE, VJP: per chain, mean over tasks; s/image: mean over tasks.",
        "",
        "| sampler | point | preset + overrides | tasks | mean PSNR | mean SSIM | NFE | VJP | s/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p["sampler"], -p["mean_psnr"])):
        mark = "**" if chosen[p["sampler"]] == p["label"] else ""
        setting = p["preset"] + "".join(f", {k}={v}" for k, v in sorted(p["overrides"].items()))
        lines.append(
            f"| {p['sampler']} | {mark}{p['label']}{mark} | {setting} | {len(p['tasks'])} | "
            f"{mark}{p['mean_psnr']:.2f}{mark} | {p['mean_ssim']:.4f} | {p['nfe']:.0f} | {p['vjp']:.0f} | "
            f"{p['seconds_per_image']:.3f} |"
        )
    lines += ["", f"Validation numbers: `{source['command']}`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance, with_provenance
    from mgdm_audio.core.atomic import write_atomic

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("validation", type=Path, help="the validation run's JSON (mgdm-audio benchmark image --json)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if not args.validation.is_file():
        print(f"choose.py: {args.validation} does not exist; run the validation command first.", file=sys.stderr)
        return 2
    document = json.loads(args.validation.read_text())
    weights = document.get("settings", {}).get("weights_sha256")  # the prior the validation numbers came from
    prov = script_provenance(weights, "cpu", argv=None if argv is None else [sys.argv[0], *argv])
    if "validation" not in str(document.get("settings", {}).get("dataset", "")):
        print(f"choose.py: {args.validation} is not a validation run (settings.dataset); refusing.", file=sys.stderr)
        return 2
    points = point_means(document["rows"])
    try:
        chosen = choose(points)
    except ValueError as error:
        print(f"choose.py: {error}.", file=sys.stderr)
        return 2
    latent = document["settings"].get("prior_kind") == "latent"
    source = {
        "path": str(args.validation),
        "prior": document["settings"].get("prior", "?"),
        "preset": "image-latent" if latent else "image",
        "preset_note": " where it differs from the pixel prior's `image` point" if latent else "",
        "images": document["settings"]["n_images"],
        "command": document.get("command", "the validation run (no command recorded)"),
    }
    result = {
        "criterion": "highest mean PSNR over the tasks run (ties: mean SSIM)",
        "points": points,
        "chosen": chosen,
        "validation": source,
    }
    write_atomic(args.out.with_suffix(".json"), json.dumps(with_provenance(result, prov), indent=1) + "\n")
    write_atomic(args.out.with_suffix(".md"), markdown(points, chosen, source) + provenance_markdown(prov))
    for sampler, label in sorted(chosen.items()):
        print(f"{sampler}: {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
