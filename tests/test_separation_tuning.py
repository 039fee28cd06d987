"""The equal validation budget (evaluation/separation/tuning.yaml, tune.py): every audio sampler the same number of
points, every point a valid configuration, the best point chosen, and test splits refused before any work."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.samplers.run import resolve

SCRIPT = Path(__file__).resolve().parents[1] / "evaluation/separation/tune.py"


@pytest.fixture(scope="module")
def tune():
    spec = importlib.util.spec_from_file_location("tune", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_audio_sampler_has_the_same_number_of_valid_points(tune) -> None:
    table = tune.load_points(tune.CONFIG, None, None)
    budget = yaml.safe_load(tune.CONFIG.read_text())["points_per_sampler"]
    assert {"mgdm", "dps", "pigdm", "diffpir", "daps", "reddiff", "pnpdm", "msdm"} <= set(table) and budget <= 6
    runs = tune.run_specs(table)
    assert len(runs) == budget * len(table) and len({r.name for r in runs}) == len(runs)
    for run in runs:
        resolved = resolve(run, "audio")  # an unknown preset or setting is a UserInputError here
        assert resolved.sampler_preset == "audio-fast"
    assert all(entry["points"][0] == {} for entry in table.values())  # the reference preset itself comes first


def test_unequal_budgets_and_unknown_samplers_are_refused(tune, tmp_path) -> None:
    bad = tmp_path / "tuning.yaml"
    bad.write_text(yaml.safe_dump({"points_per_sampler": 2, "samplers": {"dps": {"preset": "fast", "points": [{}]}}}))
    with pytest.raises(UserInputError, match="another count"):
        tune.load_points(bad, None, None)
    with pytest.raises(UserInputError, match="not in"):
        tune.load_points(tune.CONFIG, ["nope"], None)
    assert [len(e["points"]) for e in tune.load_points(tune.CONFIG, ["dps", "msdm"], 2).values()] == [2, 2]


def test_the_best_mean_si_sdri_is_chosen(tune) -> None:
    table = {"dps": {"points": [{}, {}, {}]}}
    summary = {
        "dps-p0": {"si_sdri_average": 1.0},
        "dps-p1": {"si_sdri_average": None},
        "dps-p2": {"si_sdri_average": 2},
    }
    assert tune.choose(table, summary) == {"dps": "dps-p2"}


def test_a_test_split_is_refused_before_any_work(tune, tmp_path, capsys) -> None:
    assert tune.main(["--root", str(tmp_path / "missing"), "--split", "test_opl3", "--out", str(tmp_path / "t")]) == 2
    assert "test split" in capsys.readouterr().err and not list(tmp_path.iterdir())
