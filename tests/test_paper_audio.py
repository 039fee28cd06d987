"""`benchmark paper-audio`: the papers' protocol on a tiny Slakh folder with the toy band prior (known answer):
non-overlapping chunks per track, windows scored across chunk boundaries, pooled mean, resume from the cache."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from mgdm_audio.benchmarks.paper_audio import PAPER_STEMS, run_paper_audio, summarise
from mgdm_audio.cli import main
from mgdm_audio.metrics.sisdr import windows
from tests.audio_priors_for_tests import BandPrior, band_stems

SR, CHUNK = 8000, 8192  # 1.02 s chunks: no 4 s window fits inside one, so every scored window crosses a boundary


@pytest.fixture
def slakh(tmp_path):
    lengths = {"Track00002": 5 * CHUNK + 1000, "Track00001": 3 * CHUNK + 5}  # trailing partial chunks dropped
    for i, (name, n) in enumerate(lengths.items()):
        x = band_stems(n, SR, seed=i).numpy()
        folder = tmp_path / "slakh" / "test" / name
        folder.mkdir(parents=True)
        for k, stem in enumerate(PAPER_STEMS):
            sf.write(folder / f"{stem}.wav", x[k], SR, subtype="FLOAT")
    return tmp_path / "slakh"


def test_protocol_scores_whole_tracks_across_chunk_boundaries_and_resumes(slakh, tmp_path) -> None:
    prior = BandPrior(sample_rate=SR, chunk_samples=CHUNK)
    cache = tmp_path / "cache.jsonl"
    kw = dict(samplers=["msdm"], preset="fast", device="cpu", cache=cache, chunk_samples=CHUNK, batch_chunks=2)
    rows, info = run_paper_audio(slakh, prior, **kw)
    by_track = {r["track"]: r for r in rows}
    assert list(by_track) == ["Track00001", "Track00002"] and info["tracks"] == 2
    assert [by_track[t]["chunks"] for t in by_track] == [3, 5]
    # the track's concatenated chunks are scored: as many windows as the whole (cropped) track has
    for t, n in (("Track00001", 3), ("Track00002", 5)):
        assert len(by_track[t]["per_window"]) == len(windows(n * CHUNK, SR)) > 0
        assert by_track[t]["nfe"] == 100 * n  # msdm fast (its audio-fast preset): 100 NFE per chunk
    summary = summarise(rows, PAPER_STEMS)["msdm"]
    pooled = torch.tensor([w for r in rows for w in r["per_window"]], dtype=torch.float64).mean(0)
    assert summary["si_sdri"] == pytest.approx(dict(zip(PAPER_STEMS, pooled.tolist(), strict=True)))
    assert summary["si_sdri_average"] > 5.0  # disjoint bands: far above the mixture (0 dB)
    calls = prior.calls
    again, _ = run_paper_audio(slakh, prior, **kw)
    assert prior.calls == calls and again == rows  # every track came from the cache


def test_cli_paper_audio_writes_reports(tmp_path, monkeypatch, capsys) -> None:
    import mgdm_audio.audio.priors as priors_module

    toy = BandPrior(sample_rate=SR, chunk_samples=CHUNK)
    monkeypatch.setattr(priors_module, "load_prior", lambda name, device="cpu", bf16=False: toy)
    folder = tmp_path / "slakh" / "test" / "Track00001"
    folder.mkdir(parents=True)
    x = band_stems(262_144 + 100, SR, seed=3).numpy()  # one paper-size chunk
    for k, stem in enumerate(PAPER_STEMS):
        sf.write(folder / f"{stem}.wav", x[k], SR, subtype="FLOAT")
    report, table = tmp_path / "r.json", tmp_path / "r.md"
    args = ["benchmark", "paper-audio", "--root", str(tmp_path / "slakh"), "--prior", "toy", "--samplers", "msdm"]
    assert main([*args, "--preset", "fast", "-d", "cpu", "--json", str(report), "--markdown", str(table)]) == 0
    data = json.loads(report.read_text())
    assert data["info"]["chunk_samples"] == 262_144 and data["summary"]["msdm"]["chunks"] == 1
    assert len(data["rows"][0]["per_window"]) == len(windows(262_144, SR))
    assert "| msdm | fast |" in table.read_text()
    bad = ["benchmark", "paper-audio", "--root", str(tmp_path / "slakh"), "--prior", "toy", "--batch-chunks", "0"]
    assert main(bad) == 2 and "--batch-chunks" in capsys.readouterr().err


def test_second_run_is_served_from_the_cache_and_a_changed_preset_recomputes(slakh, tmp_path) -> None:
    toy = BandPrior(sample_rate=SR, chunk_samples=CHUNK)
    kw = dict(device="cpu", cache=tmp_path / "cells.jsonl", chunk_samples=CHUNK, batch_chunks=2)
    first, _ = run_paper_audio(slakh, toy, ["msdm:fast"], **kw)
    calls = toy.calls
    assert calls > 0 and summarise(first, PAPER_STEMS)["msdm:fast"]["nfe_per_chunk"] == 100
    again, _ = run_paper_audio(slakh, toy, ["msdm:fast"], **kw)
    assert toy.calls == calls and again == first  # both tracks from the cache
    changed, _ = run_paper_audio(slakh, toy, ["msdm:fast", "short=msdm:fast:n_steps=5"], **kw)
    assert toy.calls == calls + 10 * (2 + 3)  # only the new run: 5 steps x 2 resamples per batch of <= 2 chunks
    short = summarise(changed, PAPER_STEMS)["short"]
    assert (short["preset"], short["nfe_per_chunk"], short["chunks"]) == ("fast", 10, 8)
    assert [r for r in changed if r["sampler"] == "msdm:fast"] == first
    lines = (tmp_path / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["key"]["start_scale"] == "vp" for line in lines)


def test_sharded_ranks_split_the_tracks_and_rank0_returns_the_same_rows(slakh, tmp_path) -> None:
    from mgdm_audio.benchmarks.harness import Shard

    kw = dict(samplers=["msdm:fast"], device="cpu", chunk_samples=CHUNK, batch_chunks=2)
    single, _ = run_paper_audio(slakh, BandPrior(sample_rate=SR, chunk_samples=CHUNK), **kw)
    one, zero = BandPrior(sample_rate=SR, chunk_samples=CHUNK), BandPrior(sample_rate=SR, chunk_samples=CHUNK)
    cache = tmp_path / "cells.jsonl"
    # the ranks one after the other (what the barrier orders): track i goes to rank i % 2, rank 0 merges
    assert run_paper_audio(slakh, one, cache=cache, shard=Shard(1, 2), **kw)[0] is None
    rows, info = run_paper_audio(slakh, zero, cache=cache, shard=Shard(0, 2), **kw)
    timeless = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert timeless(rows) == timeless(single) and info["world_size"] == 2
    assert (one.calls, zero.calls) == (100 * 3, 100 * 2)  # rank 1: Track00002 (3 batches); rank 0: Track00001 (2)
    assert len(cache.read_text().splitlines()) == 2 and not list(tmp_path.glob("cells.jsonl.rank*"))
