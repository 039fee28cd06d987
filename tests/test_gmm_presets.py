"""Every competitor's `gmm` preset is the point its validation budget chose on the exact-posterior benchmark
(`evaluation/gmm/rounds/16-competitors`: four points each on validation problems, the lowest average SW kept), as
MGDM's `gmm` preset came out of rounds 1-15."""

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from statistics import fmean

import pytest
import yaml

from mgdm_audio.samplers.run import RunSpec, resolve

ROUND = Path(__file__).resolve().parents[1] / "evaluation" / "gmm" / "rounds" / "16-competitors"
CANDIDATES = yaml.safe_load((ROUND / "candidates.yaml").read_text())


def config_key(sampler: str, config: object) -> str:
    """The run's identity in the round's cache lines: sampler and its resolved configuration as JSON."""
    as_json = json.loads(json.dumps(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config))
    return sampler + json.dumps(as_json, sort_keys=True)


def candidate_key(c: dict) -> str:
    run = resolve(RunSpec(c["sampler"], "default", tuple(sorted(c.get("overrides", {}).items()))), "plain")
    return config_key(c["sampler"], run.config)


def chosen_points() -> dict[str, dict]:
    """Per sampler, the candidate with the lowest average over the settings (d, d_y) of the mean SW over problems."""
    sw: dict[str, dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in (ROUND / "results.jsonl").read_text().splitlines():
        cell = json.loads(line)
        for row in cell["rows"]:
            sw[config_key(cell["key"]["sampler"], cell["key"]["config"])][(row["d"], row["d_y"])].append(row["sw"])
    average = {key: fmean(fmean(v) for v in cells.values()) for key, cells in sw.items()}
    best: dict[str, dict] = {}
    for c in CANDIDATES:
        assert len(sw[candidate_key(c)]) == 4, c["label"]  # every (d, d_y) setting ran
        if c["sampler"] not in best or average[candidate_key(c)] < average[candidate_key(best[c["sampler"]])]:
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
