"""Every competitor's `gmm` preset is the point its validation budget chose on the exact-posterior benchmark
(`evaluation/gmm/rounds/16-competitors`: four points each on validation problems, the lowest average SW kept), as
MGDM's `gmm` preset came out of rounds 1-15; MGDM's `gmm-budget4` preset is the point the same four-point budget chose
for it (`evaluation/gmm/rounds/17-mgdm-equal-budget`)."""

import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from mgdm_audio.benchmarks import gmm
from mgdm_audio.samplers.run import START_SCALE_KEY, RunSpec, resolve

ROUNDS = Path(__file__).resolve().parents[1] / "evaluation" / "gmm" / "rounds"
COMPETITORS = ROUNDS / "16-competitors"
MGDM_BUDGET4 = ROUNDS / "17-mgdm-equal-budget"


def candidates(round_dir: Path) -> list[dict]:
    return yaml.safe_load((round_dir / "candidates.yaml").read_text())


def spec(candidate: dict) -> RunSpec:
    overrides = tuple(sorted(candidate.get("overrides", {}).items()))
    return RunSpec(candidate["sampler"], candidate.get("preset", "default"), overrides)


def run_key(candidate: dict) -> str:
    """The run's identity in the round's cache lines: the engine's own key (sampler, resolved config, start) as JSON."""
    return json.dumps(json.loads(json.dumps(resolve(spec(candidate), "plain").key())), sort_keys=True)


def chosen_points(round_dir: Path) -> dict[str, dict]:
    """Per sampler, the candidate with the lowest suite average (:func:`gmm.summarise`: the mean over the settings
    (d, d_y) of the mean SW over problems)."""
    labels = {run_key(c): c["label"] for c in candidates(round_dir)}
    rows = []
    for line in (round_dir / "results.jsonl").read_text().splitlines():
        cell = json.loads(line)
        key = json.dumps({k: cell["key"][k] for k in ("sampler", "config", START_SCALE_KEY)}, sort_keys=True)
        rows += [{"sampler": labels[key], **row} for row in cell["rows"]]
    summary = gmm.summarise(rows)
    average = summary["suite_average"]
    best: dict[str, dict] = {}
    for c in candidates(round_dir):
        settings = [s for s in summary["per_setting"].values() if s["sampler"] == c["label"]]
        assert len(settings) == 4, c["label"]  # every (d, d_y) setting ran
        if c["sampler"] not in best or average[c["label"]] < average[best[c["sampler"]]["label"]]:
            best[c["sampler"]] = c
    return best


CHOSEN = chosen_points(COMPETITORS)


def test_every_sampler_had_four_points():
    counts = defaultdict(int)
    for c in candidates(COMPETITORS) + candidates(MGDM_BUDGET4):
        counts[c["sampler"]] += 1
    assert set(counts.values()) == {4} and len(counts) == 9


@pytest.mark.parametrize("sampler", sorted(CHOSEN))
def test_gmm_preset_is_the_chosen_point(sampler):
    chosen = resolve(spec(CHOSEN[sampler]), "plain")
    assert resolve(RunSpec(sampler, "gmm"), "plain").config == chosen.config


def test_mgdm_budget4_preset_is_the_chosen_point():
    chosen = resolve(spec(chosen_points(MGDM_BUDGET4)["mgdm"]), "plain")
    assert resolve(RunSpec("mgdm", "gmm-budget4"), "plain").config == chosen.config
