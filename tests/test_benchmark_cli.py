"""The GMM benchmark engine and the command line: rows, cache/resume, tables, clear errors."""

import dataclasses
import json

import pytest

from mgdm_audio.benchmarks.gmm import (
    Suite,
    entry,
    make_problem,
    markdown_table,
    mean_ci,
    paired_by_problem,
    paired_table,
    run_suite,
    summarise,
    wins,
)
from mgdm_audio.cli import main
from mgdm_audio.samplers.registry import get_sampler, sampler_names

TINY = Suite(dims=(2,), dims_y=(1,), n_problems=2, n_samples=200)
ENTRIES = [entry("ddim", "fast", label="prior"), entry("dps", "fast")]


def test_every_registered_sampler_loads_with_its_presets():
    for name in sampler_names():
        spec = get_sampler(name)
        assert spec.name == name
        for preset in ["default", *spec.presets]:
            spec.config(preset)


def test_problem_is_seeded_and_floor_is_positive():
    a = make_problem(8, 1, 0, 300, 50, 0)
    b = make_problem(8, 1, 0, 300, 50, 0)
    c = make_problem(8, 1, 0, 300, 50, 500_000)
    assert a.floor == b.floor and a.floor > 0
    assert (a.reference == b.reference).all()
    assert not (a.matrix == c.matrix).all()


def test_suite_rows_cache_and_resume(tmp_path):
    cache = tmp_path / "rows.jsonl"
    rows = run_suite(ENTRIES, TINY, cache=cache, progress=False)
    assert len(rows) == 4
    keys = {"sampler", "d", "d_y", "problem", "sw", "sw_floor", "nfe", "vjp", "seconds"}
    assert all(set(r) == keys for r in rows)
    assert {r["nfe"] for r in rows if r["sampler"] == "prior"} == {19}
    lines = cache.read_text().splitlines()
    again = run_suite(ENTRIES, TINY, cache=cache, progress=False)
    assert again == rows and cache.read_text().splitlines() == lines  # nothing recomputed
    cache.write_text("\n".join(lines[:1]) + "\n")  # a killed run: one row left
    resumed = run_suite(ENTRIES, TINY, cache=cache, progress=False)
    assert [r["sw"] for r in resumed] == [r["sw"] for r in rows]  # same seeds, same numbers
    other = run_suite(ENTRIES, dataclasses.replace(TINY, seed_base=TINY.seed_base + 1), cache=cache, progress=False)
    assert all(set(r) == keys for r in other)  # the cache's seed base is not part of the rows
    assert [r["sw_floor"] for r in other] != [r["sw_floor"] for r in rows]  # other problems: not taken from the cache
    # the informed sampler beats prior samples on this 2-d problem, the prior is far above the floor
    s = summarise(rows)["per_setting"]
    assert s["dps:fast|2|1"]["sw_mean"] < s["prior|2|1"]["sw_mean"]
    assert wins(rows, "dps:fast", "prior") == (1, 1)
    table = markdown_table(rows, "tiny")
    assert "| prior |" in table and "floor" in table


def test_intervals_use_t_quantiles_and_pair_by_problem():
    """Five problems: the half-width is t_{0.975, 4} SE (2.78, not 1.96); the paired difference is the t interval
    of the per-problem differences, so a shift shared by every problem cancels."""
    from scipy import stats

    values = [1.0, 2.0, 4.0, 7.0, 11.0]
    mean, half = mean_ci(values)
    assert mean == 5.0 and half == pytest.approx(stats.t.ppf(0.975, 4) * stats.sem(values))
    hard = [10.0, 0.5, 3.0, 8.0, 1.0, 6.0]  # problems of very different difficulty, shared by both samplers
    rows = [
        {"sampler": name, "d": 2, "d_y": 1 + (i >= 3), "problem": i % 3, "sw": h + shift + 0.01 * (i % 2)}
        for name, shift in (("a", 0.0), ("b", 0.2))
        for i, h in enumerate(hard)
    ]
    diff, lower = paired_by_problem(rows, "a", "b")
    assert diff.n == 6 and lower == 6 and diff.mean == pytest.approx(-0.2) and diff.hi < 0
    one, _ = paired_by_problem(rows, "a", "b", (2, 2))
    assert one.n == 3
    text, out = paired_table(rows, "a")
    assert "| b |" in text and out[0]["a_lower"] == 6 and out[0]["difference"]["n"] == 6


def test_cli_rejects_unknown_sampler_before_work(capsys, tmp_path):
    out = tmp_path / "x.json"
    assert main(["benchmark", "gmm", "--quick", "--samplers", "nope", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown sampler 'nope'" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_rejects_negative_seed_base(capsys, tmp_path):
    out = tmp_path / "x.json"
    assert main(["benchmark", "gmm", "--quick", "--seed-base", "-1", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--seed-base" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_info_lists_samplers(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    for name in sampler_names():
        assert name in text


def test_sampler_requirements_are_checked():
    from mgdm_audio.core.errors import UserInputError

    with pytest.raises(UserInputError, match="needs an inverse problem"):
        get_sampler("dps").check(None)
    get_sampler("ddim").check(None)


def test_json_written_atomically(tmp_path, monkeypatch):
    import mgdm_audio.benchmarks.gmm as gmm

    monkeypatch.setattr(gmm, "QUICK", TINY)
    monkeypatch.setattr(gmm, "DEFAULT_ENTRIES", tuple(ENTRIES))
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    assert (
        main(
            ["benchmark", "gmm", "--quick", "--no-scaling", "--no-progress", "--json", str(out), "--markdown", str(md)]
        )
        == 0
    )
    payload = json.loads(out.read_text())
    assert len(payload["rows"]) == 4 and "summary" in payload
    assert "GMM exact-posterior benchmark" in md.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    other = tmp_path / "other.json"  # --seed-base draws other problems
    assert (
        main(["benchmark", "gmm", "--quick", "--no-scaling", "--no-progress", "--seed-base", "7", "--json", str(other)])
        == 0
    )
    moved = json.loads(other.read_text())
    assert (payload["suite"]["seed_base"], moved["suite"]["seed_base"]) == (0, 7)
    assert [r["sw_floor"] for r in moved["rows"]] != [r["sw_floor"] for r in payload["rows"]]


def test_workers_give_the_same_rows(tmp_path):
    one = run_suite(ENTRIES, TINY, progress=False, workers=1)
    two = run_suite(ENTRIES, TINY, cache=tmp_path / "c.jsonl", progress=False, workers=2)
    assert [(r["sampler"], r["problem"], r["sw"]) for r in one] == [(r["sampler"], r["problem"], r["sw"]) for r in two]


def test_every_mgdm_entry_gets_its_paired_section(tmp_path, monkeypatch):
    """A second MGDM preset beside `gmm` (e.g. the four-point `gmm-budget4`) is compared with every sampler too."""
    import mgdm_audio.benchmarks.gmm as gmm

    small = {"n_steps": 10, "n_reps": 1, "n_denoising_steps": 2, "x0_candidates": 1}
    entries = (entry("mgdm", "gmm", small), entry("mgdm", "fast", {"n_steps": 10}), entry("dps", "fast"))
    monkeypatch.setattr(gmm, "QUICK", TINY)
    monkeypatch.setattr(gmm, "DEFAULT_ENTRIES", entries)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    args = ["benchmark", "gmm", "--quick", "--no-scaling", "--no-progress", "--workers", "1"]
    assert main([*args, "--json", str(out), "--markdown", str(md)]) == 0
    text = md.read_text()
    assert "### Paired by problem: mgdm:gmm minus each sampler" in text
    assert "### Paired by problem: mgdm:fast minus each sampler" in text
    paired_more = json.loads(out.read_text())["paired_more"]
    assert set(paired_more) == {"mgdm:fast"}  # the main entry keeps its own section
    more = paired_more["mgdm:fast"]
    assert {r["b"] for r in more} == {"mgdm:gmm", "dps:fast"}
