"""Every competitor's `gmm` preset is the point its validation budget chose on the exact-posterior benchmark
(`evaluation/gmm/rounds/16-competitors`: four points each on validation problems, the lowest average SW kept), as
MGDM's `gmm` preset came out of rounds 1-15."""

import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from mgdm_audio.benchmarks import gmm
from mgdm_audio.samplers.run import START_SCALE_KEY, RunSpec, resolve

ROUND = Path(__file__).resolve().parents[1] / "evaluation" / "gmm" / "rounds" / "16-competitors"
CANDIDATES = yaml.safe_load((ROUND / "candidates.yaml").read_text())


def run_key(sampler: str, overrides: dict) -> str:
    """The run's identity in the round's cache lines: the engine's own key (sampler, resolved config, start) as JSON."""
    run = resolve(RunSpec(sampler, "default", tuple(sorted(overrides.items()))), "plain")
    return json.dumps(json.loads(json.dumps(run.key())), sort_keys=True)


def chosen_points() -> dict[str, dict]:
    """Per sampler, the candidate with the lowest suite average (:func:`gmm.summarise`: the mean over the settings
    (d, d_y) of the mean SW over problems)."""
    labels = {run_key(c["sampler"], c.get("overrides", {})): c["label"] for c in CANDIDATES}
    rows = []
    for line in (ROUND / "results.jsonl").read_text().splitlines():
        cell = json.loads(line)
        key = json.dumps({k: cell["key"][k] for k in ("sampler", "config", START_SCALE_KEY)}, sort_keys=True)
        rows += [{"sampler": labels[key], **row} for row in cell["rows"]]
    summary = gmm.summarise(rows)
    average = summary["suite_average"]
    best: dict[str, dict] = {}
    for c in CANDIDATES:
        settings = [s for s in summary["per_setting"].values() if s["sampler"] == c["label"]]
        assert len(settings) == 4, c["label"]  # every (d, d_y) setting ran
        if c["sampler"] not in best or average[c["label"]] < average[best[c["sampler"]]["label"]]:
            best[c["sampler"]] = c
    return best


CHOSEN = chosen_points()


def test_every_competitor_had_four_points():
    counts = defaultdict(int)
    for c in CANDIDATES:
        counts[c["sampler"]] += 1
    assert set(counts.values()) == {4} and len(counts) == 8


@pytest.mark.parametrize("sampler", sorted(CHOSEN))
def test_gmm_preset_is_the_chosen_point(sampler):
    point = CHOSEN[sampler]
    chosen = resolve(RunSpec(sampler, "default", tuple(sorted(point.get("overrides", {}).items()))), "plain")
    assert resolve(RunSpec(sampler, "gmm"), "plain").config == chosen.config
