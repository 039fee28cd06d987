"""`audio-tuned` presets are exactly the points the equal-budget validation run chose (its committed results file),
and the job preset `tuned` resolves to them for audio."""

import json
from pathlib import Path

import pytest

from mgdm_audio.samplers.run import RunSpec, resolve

TUNING = Path(__file__).resolve().parents[1] / "evaluation" / "results" / "separation_tuning.json"
DOCUMENT = json.loads(TUNING.read_text())
CHOSEN = {p["sampler"]: p for p in DOCUMENT["points"] if p["label"] == DOCUMENT["chosen"][p["sampler"]]}


def test_every_tuned_sampler_has_a_chosen_point():
    assert set(CHOSEN) == set(DOCUMENT["chosen"]) and len(CHOSEN) == 9


@pytest.mark.parametrize("sampler", sorted(CHOSEN))
def test_audio_tuned_is_the_chosen_point(sampler):
    point = CHOSEN[sampler]
    chosen = resolve(RunSpec(sampler, point["preset"], tuple(sorted(point["overrides"].items()))), "audio")
    tuned = resolve(RunSpec(sampler, "tuned"), "audio")
    assert tuned.config == chosen.config and tuned.start_scale == chosen.start_scale == "vp"
    assert resolve(RunSpec(sampler, "audio-tuned"), "audio").config == chosen.config
