"""Equal compute: the budgets of each sampler, the matching at equal seconds, and `benchmark gmm --equal-compute`."""

import dataclasses
import json
import math

import pytest

from mgdm_audio.benchmarks.equal_compute import budgets, match_budgets, matched_section, nearest_budget
from mgdm_audio.benchmarks.gmm import Suite, entry, equal_compute_plan, problem_key
from mgdm_audio.cli import main
from mgdm_audio.samplers.run import resolve

TINY = Suite(dims=(2,), dims_y=(1,), n_problems=2, n_samples=200)


def test_budgets_scale_each_samplers_knob():
    dps = budgets(entry("dps"), 1000)  # 1000 steps: x2 would pass the grid, so x0.125 .. x1
    assert [b.value for b in dps] == [125, 250, 500, 1000] and dps[-1].factor == 1.0
    assert [b.value for b in budgets(entry("ddrm"), 1000)] == [5, 10, 20, 40]
    assert [b.value for b in budgets(entry("mgdm", "gmm"), 1000)] == [1, 2, 4]
    assert [b.label for b in budgets(entry("mgdm", "gmm"), 1000)][0] == "R=1"
    assert budgets(entry("vml_map", "fast"), 1000, knobs={}) == []  # no knob: not in the equal-compute view
    msdm = resolve(entry("msdm", "audio-fast")).config  # the same churn per step on fewer steps
    for b in budgets(entry("msdm", "audio-fast"), 1000):
        config = resolve(b.run).config
        assert config.s_churn / config.n_steps == pytest.approx(msdm.s_churn / msdm.n_steps)
    base = resolve(entry("pnpdm")).config
    for b in budgets(entry("pnpdm"), 1000):  # the same span of rho on fewer or more iterations
        config = resolve(b.run).config
        assert config.n_iters == b.value
        assert config.rho_decay**config.n_iters == pytest.approx(base.rho_decay**base.n_iters)


def test_plan_reuses_runs_with_the_same_config_and_skips_the_prior_only_run():
    entries = [entry("dps", "fast"), entry("ddim", "fast", label="prior")]
    plan, source = equal_compute_plan(entries, entries)
    assert {b.base for b in plan} == {"dps:fast"}
    by_value = {b.value: source[b.run.name] for b in plan}
    assert by_value == {
        25: "dps:fast n_steps=25",
        50: "dps:fast n_steps=50",
        100: "dps:fast",
        200: "dps:fast n_steps=200",
    }


def test_matching_takes_the_budget_nearest_the_target_on_a_log_scale():
    seconds = {"ref": {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0}, "a": {"lo": 0.5, "mid": 3.5, "hi": 10.0}, "b": {"x": 100.0}}
    median = match_budgets(seconds, "ref", "median")
    assert median.target == 3.0  # median of 1, 2, 4, 8
    assert median.chosen == {"ref": 4, "a": "mid", "b": "x"}  # |log 4/3| < |log 2/3|; b's only budget
    # closest: the ref budget with the least summed log-distance to the others' nearest budgets
    # (8 s: |log 10/8| + |log 100/8| = 2.75 against 3.35 at 4 s)
    closest = match_budgets(seconds, "ref")
    assert (closest.target, closest.chosen) == (8.0, {"ref": 8, "a": "hi", "b": "x"})
    tie = match_budgets({"ref": {1: 1.0, 2: 4.0}, "a": {"only": 2.0}}, "ref")
    assert tie.target == 1.0 and tie.chosen["ref"] == 1  # equally far on a log scale: the cheaper
    assert nearest_budget({"cheap": 1.0, "dear": 4.0}, 2.0) == "cheap"
    with pytest.raises(ValueError):
        match_budgets({"a": {1: 1.0}}, "ref")
    with pytest.raises(ValueError):
        match_budgets(seconds, "ref", "mean")


def rows_for(name, budget, seconds, offsets, sw=None):
    hard = [3.0, 0.5, 1.5, 2.5]  # problems of very different difficulty
    return [
        {
            "sampler": name,
            "budget": budget,
            "d": 2,
            "d_y": 1,
            "problem": i,
            "sw": h + offsets[i] if sw is None else sw,
            "seconds": seconds,
            "nfe": 10,
            "vjp": 0,
        }
        for i, h in enumerate(hard)
    ]


def test_matched_section_pairs_by_problem_at_the_matched_budgets():
    rows = [
        *(
            r
            for b, s in ((1, 1.0), (2, 2.0), (4, 4.0), (8, 8.0))
            for r in rows_for("ref", b, s, [0.0, 0.01, 0.02, 0.0])
        ),
        *rows_for("other", 100, 0.5, [0.4, 0.45, 0.5, 0.4]),
        *rows_for("other", 300, 3.0, [0.0] * 4, sw=math.inf),  # at the target, but diverged: not a candidate
        *rows_for("other", 500, 5.0, [0.5, 0.55, 0.58, 0.6]),
    ]
    text, out = matched_section(rows, "sw", "ref", problem_key, "SW", rule="median")
    assert out["target_seconds"] == 3.0 and out["reference_budget"] == 4
    (versus,) = out["versus"]
    assert versus["budget"] == 500  # |log 5/3| < |log 0.5/3|; 300 has a non-finite SW
    diff = versus["difference"]
    assert diff["n"] == 4 and diff["mean"] == pytest.approx(-0.55) and diff["hi"] < 0
    assert versus["reference_lower"] == 4
    assert "ref ahead by 0.550 SW" in text and "| other |" in text
    _, closest = matched_section(rows, "sw", "ref", problem_key, "SW")  # 5 s is nearest 4 s: the same pair
    assert (closest["target_seconds"], closest["versus"][0]["budget"]) == (4.0, 500)


def test_cli_equal_compute_writes_table_and_plot(tmp_path, monkeypatch):
    """Through the command line on 2 tiny problems: the default run has no equal-compute part; the flag adds the
    table, the matched section and a second PNG, and leaves the main rows as they were."""
    import mgdm_audio.benchmarks.gmm as gmm

    monkeypatch.setattr(gmm, "QUICK", dataclasses.replace(TINY, n_problems=5))  # --problems 2 below
    entries = (entry("mgdm", "gmm", {"n_steps": 20}), entry("ddrm"), entry("ddim", "fast", label="prior"))
    monkeypatch.setattr(gmm, "DEFAULT_ENTRIES", entries)
    base = ["benchmark", "gmm", "--quick", "--problems", "2", "--no-scaling", "--no-progress", "--workers", "1"]
    plain = tmp_path / "plain.json"
    assert main([*base, "--json", str(plain)]) == 0
    out, md, png = tmp_path / "ec.json", tmp_path / "ec.md", tmp_path / "gmm.png"
    assert main([*base, "--equal-compute", "--json", str(out), "--markdown", str(md), "--plot", str(png)]) == 0
    default, payload = json.loads(plain.read_text()), json.loads(out.read_text())
    assert "equal_compute" not in default
    assert [(r["sampler"], r["sw"]) for r in payload["rows"]] == [(r["sampler"], r["sw"]) for r in default["rows"]]
    ec = payload["equal_compute"]
    assert {(r["sampler"], r["budget"]) for r in ec["rows"]} == {
        *(("mgdm:gmm", r) for r in (1, 2, 4)),
        *(("ddrm", n) for n in (5, 10, 20, 40)),
    }
    assert len(ec["rows"]) == 7 * TINY.n_problems
    assert [v["sampler"] for v in ec["matched"]["versus"]] == ["ddrm"]
    text = md.read_text()
    assert "### Equal compute: SW against cost" in text and "| ddrm | n_steps=40 (x2) |" in text
    assert "### Equal compute at matched seconds: mgdm:gmm minus each sampler" in text
    assert png.exists() and (tmp_path / "gmm_equal_compute.png").stat().st_size > 10_000
    assert payload["suite"]["n_problems"] == 2


def test_cli_rejects_zero_problems(capsys, tmp_path):
    out = tmp_path / "x.json"
    assert main(["benchmark", "gmm", "--quick", "--problems", "0", "--equal-compute", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--problems" in err and "Traceback" not in err
    assert not out.exists()
