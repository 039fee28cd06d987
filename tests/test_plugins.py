"""The layers are where new work plugs in: a sampler (tests/toy_sampler.py + one registry line) and a benchmark
engine (tests/toy_engine.py + one line of ENGINES) run through the command line, and a second run is served from
the harness cache; a changed preset is not."""

import json

import pytest

from mgdm_audio.benchmarks import ENGINES
from mgdm_audio.cli import main
from mgdm_audio.samplers.registry import SAMPLER_MODULES, get_sampler
from tests import toy_engine


@pytest.fixture
def plugged(monkeypatch):
    monkeypatch.setitem(SAMPLER_MODULES, "one_step", "tests.toy_sampler")  # the one registry line
    monkeypatch.setitem(ENGINES, "toy", ("tests.toy_engine", "test engine"))  # the one engine line
    toy_engine.COMPUTED.clear()


def test_new_sampler_and_engine_run_through_the_cli_with_caching(plugged, tmp_path, capsys):
    cache, out = tmp_path / "cells.jsonl", tmp_path / "toy.json"
    argv = ["benchmark", "toy", "--samplers", "one_step,ddim:fast", "--cache", str(cache), "--json", str(out)]
    assert main(argv) == 0
    first = json.loads(out.read_text())
    assert toy_engine.COMPUTED == ["one_step", "ddim:fast"] * 2  # two problems, each run computed once
    assert [r["nfe"] for r in first["rows"]] == [1, 19, 1, 19]  # one call; DDIM's fast preset: 20 points, 19 calls
    assert first["command"] == "mgdm-audio " + " ".join(argv)
    # the one-step estimate from pure noise is near the prior mean; the sampler's draws are spread over the modes
    assert all(r["error"] < 2.0 for r in first["rows"] if r["sampler"] == "one_step")

    toy_engine.COMPUTED.clear()
    assert main(argv) == 0
    assert toy_engine.COMPUTED == []  # everything served from the cache
    assert json.loads(out.read_text()) == first

    get_sampler("one_step").presets["fast"]["n_steps"] = 5  # the preset's values change: its rows are recomputed
    try:
        assert main([*argv[:3], "one_step:fast,ddim:fast", *argv[4:]]) == 0
        assert main([*argv[:3], "one_step:fast,ddim:fast", *argv[4:]]) == 0
    finally:
        get_sampler("one_step").presets["fast"]["n_steps"] = 10
    assert toy_engine.COMPUTED == ["one_step:fast", "one_step:fast"]  # computed once per problem, then cached


def test_new_sampler_runs_in_an_existing_engine_through_the_cli(plugged, tmp_path, monkeypatch):
    import dataclasses

    import mgdm_audio.benchmarks.gmm as gmm

    monkeypatch.setattr(
        gmm, "QUICK", dataclasses.replace(gmm.QUICK, dims=(2,), dims_y=(1,), n_problems=1, n_samples=50)
    )
    cache, out = tmp_path / "gmm.jsonl", tmp_path / "gmm.json"
    argv = ["benchmark", "gmm", "--quick", "--no-scaling", "--no-progress", "--workers", "1"]
    argv += ["--samplers", "top=one_step:fast", "--cache", str(cache), "--json", str(out)]
    assert main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["sampler"], r["nfe"]) for r in rows] == [("top", 1)]
    lines = cache.read_text().splitlines()
    assert main(argv) == 0
    assert cache.read_text().splitlines() == lines  # nothing recomputed
    assert json.loads(out.read_text())["rows"] == rows
