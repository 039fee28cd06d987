"""Every image sampler's `default` image preset is exactly the point the equal-budget validation run chose for that
prior kind: `image` from the pixel prior's run (`evaluation/image/choice.json`), and on a latent prior `image-latent`
where the latent prior's run chose another point (`evaluation/image/choice_latent.json`); both made by
`evaluation/image/choose.py` from the validation JSON beside them. The benchmark's `--preset default` resolves to it."""

import json
import sys
from pathlib import Path

import pytest

from mgdm_audio.image.solve import image_modality
from mgdm_audio.samplers.run import RunSpec, resolve

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "evaluation" / "image"
#: prior kind -> (choice file, validation file)
RUNS = {"pixel": ("choice.json", "validation.json"), "latent": ("choice_latent.json", "validation_latent.json")}
#: samplers that run on the prior kind (DDRM and ΠGDM need an operator's SVD, which no latent problem has)
SAMPLERS = {"pixel": 8, "latent": 6}


def choice(kind: str) -> dict:
    return json.loads((IMAGE / RUNS[kind][0]).read_text())


def chosen_points(kind: str) -> dict[str, dict]:
    c = choice(kind)
    return {p["sampler"]: p for p in c["points"] if p["label"] == c["chosen"][p["sampler"]]}


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_every_sampler_had_the_same_number_of_points(kind):
    c = choice(kind)
    counts = {s: sum(p["sampler"] == s for p in c["points"]) for s in c["chosen"]}
    assert len(set(counts.values())) == 1 and min(counts.values()) >= 3, counts
    assert len(chosen_points(kind)) == len(c["chosen"]) >= SAMPLERS[kind]
    validation = json.loads((IMAGE / RUNS[kind][1]).read_text())["settings"]
    assert validation["prior_kind"] == kind and "validation" in validation["dataset"]


@pytest.mark.parametrize(("kind", "sampler"), [(k, s) for k in sorted(RUNS) for s in sorted(chosen_points(k))])
def test_default_preset_is_the_chosen_point(kind, sampler):
    point = chosen_points(kind)[sampler]
    modality = image_modality(kind)
    chosen = resolve(RunSpec(sampler, point["preset"], tuple(sorted(point["overrides"].items()))), modality)
    assert resolve(RunSpec(sampler, "default"), modality).config == chosen.config
    if kind == "pixel":
        assert resolve(RunSpec(sampler, "image"), modality).config == chosen.config


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_choice_recomputes_from_the_validation_rows(kind):
    sys.path.insert(0, str(IMAGE))
    import choose

    rows = json.loads((IMAGE / RUNS[kind][1]).read_text())["rows"]
    assert choose.choose(choose.point_means(rows)) == choice(kind)["chosen"]
