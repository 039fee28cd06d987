"""Every image sampler's `image` preset is exactly the point the equal-budget validation run chose
(`evaluation/image/choice.json`, made by `evaluation/image/choose.py` from `evaluation/image/validation.json`), and the
benchmark's `--preset default` resolves to it."""

import json
import sys
from pathlib import Path

import pytest

from mgdm_audio.samplers.run import RunSpec, resolve

ROOT = Path(__file__).resolve().parents[1]
CHOICE = json.loads((ROOT / "evaluation" / "image" / "choice.json").read_text())
CHOSEN = {p["sampler"]: p for p in CHOICE["points"] if p["label"] == CHOICE["chosen"][p["sampler"]]}


def test_every_sampler_had_the_same_number_of_points():
    counts = {s: sum(p["sampler"] == s for p in CHOICE["points"]) for s in CHOICE["chosen"]}
    assert len(set(counts.values())) == 1 and min(counts.values()) >= 3, counts
    assert len(CHOSEN) == len(CHOICE["chosen"]) >= 8


@pytest.mark.parametrize("sampler", sorted(CHOSEN))
def test_image_preset_is_the_chosen_point(sampler):
    point = CHOSEN[sampler]
    chosen = resolve(RunSpec(sampler, point["preset"], tuple(sorted(point["overrides"].items()))), "image")
    assert resolve(RunSpec(sampler, "image"), "image").config == chosen.config
    assert resolve(RunSpec(sampler, "default"), "image").config == chosen.config


def test_choice_recomputes_from_the_validation_rows():
    sys.path.insert(0, str(ROOT / "evaluation" / "image"))
    import choose

    rows = json.loads((ROOT / "evaluation" / "image" / "validation.json").read_text())["rows"]
    points = choose.point_means(rows)
    assert choose.choose(points) == CHOICE["chosen"]
