"""`mgdm-audio benchmark separation` on a tiny Slakh-layout folder with the toy band prior: rows and summary,
oracles, chunk selection, resume from the cache, clear errors for bad input, and the --sampler-set syntax."""

import dataclasses
import json

import pytest
import soundfile as sf

from mgdm_audio.benchmarks import separation as sb
from mgdm_audio.benchmarks.harness import read_cache
from mgdm_audio.cli import main
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.samplers.run import RunSpec
from tests.audio_priors_for_tests import BandPrior, band_stems

SR = 8000
STEMS = ("bass", "drums", "guitar", "piano")
CHUNK = 20000  # 2.5 s: one 4 s / 2 s scoring window per chunk
# cheap samplers: MSDM's fast preset (20 NFE) and ΠGDM cut to 8 steps
SHORT = {"chunk_seconds": CHUNK / SR}  # the toy prior's own chunk: one segment per benchmark chunk
FAST = ["--samplers", "msdm", "--preset", "fast", "--sampler-set", "pigdm-8=pigdm:fast:n_steps=8"]
# MSDM's fast preset with the mean of 3 posterior samples scored (a separator setting in --sampler-set)
MEAN3 = "msdm-mean3=msdm:fast:n_samples=3"


def write_slakh(root, tracks=3, seconds=5.0, train_tracks=2):
    """ROOT/test/TrackNNNNN/{stem}.wav (MSDM's layout); the last test track has a single active stem after 2.5 s.
    ROOT/train holds other seeds (the wiener baseline's spectra)."""
    for split, n, offset in (("test", tracks, 0), ("train", train_tracks, 100)):
        for i in range(n):
            x = band_stems(int(seconds * SR), SR, seed=offset + i).numpy()
            if split == "test" and i == tracks - 1:
                x[1:, CHUNK:] = 0.0
            folder = root / split / f"Track{offset + i:05d}"
            folder.mkdir(parents=True)
            for k, stem in enumerate(STEMS):
                sf.write(folder / f"{stem}.wav", x[k], SR, subtype="FLOAT")
    return root


@pytest.fixture
def data(tmp_path):
    return write_slakh(tmp_path / "slakh")


@pytest.fixture
def prior(monkeypatch):
    """`--prior band-toy` resolves to the toy prior (no weights on disk)."""
    import mgdm_audio.audio.priors as priors_module

    toy = BandPrior(sample_rate=SR, chunk_samples=CHUNK)
    real_load = priors_module.load_prior
    monkeypatch.setattr(
        priors_module, "load_prior", lambda name, device="cpu": toy if str(name) == "band-toy" else real_load(name)
    )
    return toy


def _cli(data, tmp_path, *extra):
    args = ["benchmark", "separation", "--root", str(data), "--layout", "slakh", "--prior", "band-toy"]
    return main([*args, "--device", "cpu", "--no-progress", "--threads", "1", "--chunk-seconds", "2.5", *extra])


def test_sampler_set_parsing():
    runs = sb.parse_sampler_set("mgdm-R1=mgdm:fast:n_reps=1, dps-x=dps:paper:gamma=0.5:start_scale=vp,m=msdm")
    assert runs[0] == RunSpec("mgdm", "fast", (("n_reps", 1),), "mgdm-R1")
    assert runs[1].overrides_dict == {"gamma": 0.5, "start_scale": "vp"} and runs[1].preset == "paper"
    assert runs[2] == RunSpec("msdm", "default", (), "m")
    assert isinstance(runs[0].overrides_dict["n_reps"], int)
    for bad in ("mgdm:fast", "=mgdm", "x=", "x=mgdm:fast:n_reps", "a=mgdm,a=dps"):
        with pytest.raises(UserInputError, match="sampler-set"):
            sb.parse_sampler_set(bad)
    names = [r.name for r in sb.make_runs(["mgdm", "dps"], "fast", "mgdm-R2=mgdm:fast:n_reps=2")]
    assert names == ["mgdm:fast", "dps:fast", "mgdm-R2", "irm", "ibm", "mixture", "wiener", "wiener-sample"]
    with pytest.raises(UserInputError, match="unique"):
        sb.make_runs(["mgdm"], "default", "mgdm=mgdm:fast")


def test_chunk_order_is_seeded_spread_over_tracks_and_a_prefix():
    index = [(f"T{t}", 1000 * c) for t in range(4) for c in range(5)]
    order = sb.chunk_order(index, seed=3)
    assert sorted(order) == list(range(20)) and order == sb.chunk_order(index, seed=3)
    assert order != sb.chunk_order(index, seed=4)
    assert len({index[p][0] for p in order[:4]}) == 4  # the first four chunks come from four different tracks
    assert sb.silence_db_for(88200) == pytest.approx(-47.0, abs=0.05)  # MSDM's 4 s window threshold


def test_default_chunk_holds_a_scoring_window():
    assert sb.benchmark_chunk_samples(BandPrior(SR, 20000)) == 40000  # 2.5 s prior chunk -> two of them, 5 s
    assert sb.benchmark_chunk_samples(BandPrior(SR, 40000)) == 40000
    assert sb.benchmark_chunk_samples(BandPrior(22050, 32768)) == 98304  # slakh-style-small: 3 x 1.49 s
    assert sb.benchmark_chunk_samples(BandPrior(SR, 512), 2.5) == 20000
    with pytest.raises(UserInputError, match="chunk-seconds"):
        sb.benchmark_chunk_samples(BandPrior(SR, 512), 1.5)


def test_rows_summary_oracles_and_outputs(data, tmp_path, prior, capsys):
    out = tmp_path / "out"
    code = _cli(
        data,
        tmp_path,
        *FAST[:-1],
        FAST[-1] + "," + MEAN3,
        "--max-chunks",
        "3",
        "--json",
        str(out / "r.json"),
        "--markdown",
        str(out / "r.md"),
        "--plot",
        str(out / "r.png"),
    )
    assert code == 0, capsys.readouterr().err
    payload = json.loads((out / "r.json").read_text())
    rows, summary = payload["rows"], payload["summary"]
    keys = {"sampler", "preset", "track", "chunk", "stem", "si_sdri", "si_sdri_nonsilent", "sdr", "nfe", "vjp"}
    assert all(keys | {"seconds", "seed"} <= set(r) for r in rows)
    names = ["msdm:fast", "pigdm-8", "msdm-mean3", "irm", "ibm", "mixture", "wiener", "wiener-sample"]
    assert list(summary) == names and len(rows) == len(names) * 3 * len(STEMS)
    chunks = {(r["track"], r["chunk"]) for r in rows}
    assert len(chunks) == 3 and len({t for t, _ in chunks}) == 3  # spread over the three tracks
    assert ("Track00002", CHUNK) not in chunks  # one active stem only: filtered out (MSDM's rule)
    for chunk in chunks:  # every sampler ran with the same seed on a chunk
        assert len({r["seed"] for r in rows if (r["track"], r["chunk"]) == chunk}) == 1
    assert all(r["sdr"] is None for r in rows)  # BSSEval not asked for
    assert summary["msdm:fast"]["nfe_per_chunk"] == 100 and summary["pigdm-8"]["nfe_per_chunk"] > 0
    assert summary["mixture"]["si_sdri_average"] == pytest.approx(0.0, abs=1e-6)
    irm = summary["irm"]["si_sdri_average"]
    assert irm > 30 and all(irm > summary[n]["si_sdri_average"] for n in ("msdm:fast", "pigdm-8", "mixture"))
    assert summary["pigdm-8"]["overrides"] == {"n_steps": 8}
    # the toy stems occupy disjoint bands: stationary spectra from the train split separate them almost perfectly
    assert summary["wiener"]["si_sdri_average"] > 20 and summary["wiener"]["nfe_per_chunk"] == 0
    assert summary["wiener"]["preset"] == "train PSD" and len(payload["info"]["wiener_psd_sha256"]) == 64
    # on disjoint bands the posterior is (nearly) a point: one exact sample scores like the mean
    assert summary["wiener-sample"]["si_sdri_average"] > 20
    # n_samples=3: three chains per chunk, counted in the NFE; the override is the separator's, not the sampler's
    assert summary["msdm-mean3"]["nfe_per_chunk"] == 3 * summary["msdm:fast"]["nfe_per_chunk"]
    assert summary["msdm-mean3"]["overrides"] == {"n_samples": 3}
    text = (out / "r.md").read_text()
    assert "| pigdm-8 |" in text and "| irm |" in text and "seed 0" in text
    assert (out / "r.png").stat().st_size > 1000
    # one row per (run, chunk), its mean over stems; levels and paired differences computed from them
    per_chunk = payload["chunks"]
    assert len(per_chunk) == len(names) * 3 and all(set(STEMS) == set(c["si_sdri"]) for c in per_chunk)
    assert {"chunk_id", "track", "sampler", "si_sdri_mean", "nfe", "vjp", "seconds"} <= set(per_chunk[0])
    irm_chunks = [c["si_sdri_mean"] for c in per_chunk if c["sampler"] == "irm"]
    assert payload["levels"]["irm"]["si_sdri"]["mean"] == pytest.approx(sum(irm_chunks) / 3)
    assert payload["levels"]["irm"]["si_sdri"]["n"] == 3 and payload["levels"]["pigdm-8"]["nfe_per_chunk"] > 0
    pairs = {(d["a"], d["b"]): d for d in payload["paired_differences"]}
    assert payload["info"]["reference"] == "msdm:fast"  # the first sampler run
    assert set(pairs) == {
        ("pigdm-8", "msdm:fast"),
        ("msdm-mean3", "msdm:fast"),
        *((s, b) for b in ("wiener", "wiener-sample", "mixture") for s in ("msdm:fast", "pigdm-8", "msdm-mean3")),
    }
    vs_mixture = pairs[("pigdm-8", "mixture")]["difference"]  # the mixture scores 0: the difference is the level
    assert vs_mixture["mean"] == pytest.approx(payload["levels"]["pigdm-8"]["si_sdri"]["mean"], abs=1e-6)
    assert vs_mixture["lo"] < vs_mixture["mean"] < vs_mixture["hi"] and vs_mixture["n"] == 3
    below_wiener = pairs[("pigdm-8", "wiener")]  # an 8-step sampler on disjoint bands is far below the exact mean
    assert below_wiener["difference"]["hi"] < 0 and below_wiener["words"].startswith("behind by ")
    assert "### Paired differences" in text and "- pigdm-8 vs msdm:fast: " in text
    assert "### Equal compute" in text and "| NFE + VJP |" in text
    # provenance: the command, the commit, the prior's weights and the machine, in both files
    prov = payload["provenance"]
    assert prov["command"].startswith("mgdm-audio benchmark separation") and payload["command"] == prov["command"]
    assert prov["weights_sha256"] == prior.weights_sha256 and prov["machine"]["device"] == "cpu"
    assert prov["machine"]["torch_threads"] >= 1 and prov["machine"]["cpu"]
    assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    assert f"Commit `{prov['git']['commit'][:12]}`" in text and prov["machine"]["cpu"] in text
    assert prior.weights_sha256 in text and f"Regenerate: `{prov['command']}`" in text


def test_equal_compute_budgets_and_matched_seconds(data, tmp_path, prior, capsys):
    """--equal-compute: each cold one-sample run at x0.25 and x0.5 its knob (labelled by the knob's value), the
    warm/mean-of-K runs left alone, budget runs out of the paired list, and the reference compared with each sampler
    at matched seconds per chunk, paired by chunk."""
    out = tmp_path / "ec.json"
    runs = "msdm=msdm:fast:n_steps=8,pigdm=pigdm:fast:n_steps=8," + MEAN3
    code = _cli(
        data,
        tmp_path,
        "--samplers",
        "",
        "--sampler-set",
        runs,
        "--no-oracles",
        "--equal-compute",
        "--max-chunks",
        "2",
        "--json",
        str(out),
        "--markdown",
        str(tmp_path / "ec.md"),
    )
    assert code == 0, capsys.readouterr().err
    payload = json.loads(out.read_text())
    names = ["msdm", "pigdm", "msdm-mean3", "msdm n_steps=2", "msdm n_steps=4", "pigdm n_steps=3", "pigdm n_steps=4"]
    assert list(payload["summary"]) == names
    budgets = payload["equal_compute"]["budgets"]
    assert budgets["msdm n_steps=2"] == {"base": "msdm", "knob": "n_steps", "value": 2, "factor": 0.25}
    assert budgets["msdm"]["factor"] == 1.0 and "msdm-mean3" not in budgets
    assert payload["summary"]["msdm n_steps=4"]["nfe_per_chunk"] < payload["summary"]["msdm"]["nfe_per_chunk"]
    assert {d["a"] for d in payload["paired_differences"]} == {"pigdm", "msdm-mean3"}
    matched = payload["equal_compute"]["matched"]
    assert matched["reference"] == "msdm" and [v["sampler"] for v in matched["versus"]] == ["pigdm"]
    versus = matched["versus"][0]
    chunks = {(c["sampler"], c["chunk_id"]): c["si_sdri_mean"] for c in payload["chunks"]}
    ref = next(k for k, b in budgets.items() if b["base"] == "msdm" and b["value"] == matched["reference_budget"])
    its = next(k for k, b in budgets.items() if b["base"] == "pigdm" and b["value"] == versus["budget"])
    ids = {c for _, c in chunks}
    diff = sum(chunks[(ref, c)] - chunks[(its, c)] for c in ids) / len(ids)
    assert versus["difference"]["mean"] == pytest.approx(diff) and versus["difference"]["n"] == 2
    assert "### Equal compute at matched seconds: msdm minus each sampler" in (tmp_path / "ec.md").read_text()


def test_stratified_draw_covers_distinct_tracks():
    """Uneven tracks (one long, many short): the first k chunks of the seeded order come from min(k, tracks)
    distinct tracks, whatever the seed, and their order within a track is seeded too."""

    class Index:
        chunk_index = [("Long", 1000 * c) for c in range(40)] + [(f"T{t}", 0) for t in range(7)]

    for seed in range(5):
        chunks = sb.select_chunks(Index(), 30, seed)
        assert len(chunks) == 30 and len({c.chunk_id for c in chunks}) == 30
        for k in (1, 5, 8, 30):
            assert len({c.track for c in chunks[:k]}) == min(k, 8)
    starts = {tuple(c.start for c in sb.select_chunks(Index(), 10, seed) if c.track == "Long") for seed in range(4)}
    assert len(starts) > 1  # not the first chunks of the long track


def test_resume_reuses_cached_chunks(data, tmp_path, prior):
    runs = sb.make_runs(["msdm"], "fast")
    cache = tmp_path / "cache.jsonl"
    computed: list[str] = []

    def count(run, chunk):
        computed.append(f"{run.name}@{chunk.chunk_id}")

    first = sb.prepare(data, "slakh", "test", prior, runs, max_chunks=2, seed=1, device="cpu", **SHORT)
    rows_first = sb.run_benchmark(first, cache=cache, progress=False, on_result=count)
    assert len(computed) == 2 * len(runs)
    with cache.open("a") as f:
        f.write('{"key": "truncated by a kill')  # a half-written last line is ignored
    computed.clear()
    full = sb.prepare(data, "slakh", "test", prior, runs, max_chunks=None, seed=1, device="cpu", **SHORT)
    rows_full = sb.run_benchmark(full, cache=cache, progress=False, on_result=count)
    assert len(full.chunks) == 5 and len(computed) == 3 * len(runs)  # only the three new chunks
    first_ids = {c.chunk_id for c in first.chunks}
    assert first_ids == {c.chunk_id for c in full.chunks[:2]}  # a short run's chunks lead the longer run
    again = [r for r in rows_full if f"{r['track']}:{r['chunk']}" in first_ids]
    key = lambda r: (r["sampler"], r["track"], r["chunk"], r["stem"])  # noqa: E731
    assert sorted(again, key=key) == sorted(rows_first, key=key)
    # a different seed is a different experiment: nothing is reused
    computed.clear()
    other = sb.prepare(data, "slakh", "test", prior, runs[:1], max_chunks=1, seed=2, device="cpu", **SHORT)
    sb.run_benchmark(other, cache=cache, progress=False, on_result=count)
    assert computed == [f"msdm:fast@{other.chunks[0].chunk_id}"]


def test_a_preset_whose_values_change_is_recomputed(data, tmp_path, prior, monkeypatch):
    """The cache is keyed on the settings a preset resolves to, not only on its name."""
    from mgdm_audio.samplers import msdm

    runs = sb.make_runs(["msdm"], "fast", oracles=False)
    cache = tmp_path / "cache.jsonl"
    computed: list[str] = []
    setup = sb.prepare(data, "slakh", "test", prior, runs, max_chunks=1, seed=1, device="cpu", **SHORT)
    sb.run_benchmark(setup, cache=cache, progress=False, on_result=lambda r, c: computed.append(r.name))
    setup = sb.prepare(data, "slakh", "test", prior, runs, max_chunks=1, seed=1, device="cpu", **SHORT)
    sb.run_benchmark(setup, cache=cache, progress=False, on_result=lambda r, c: computed.append(r.name))
    assert computed == ["msdm:fast"]  # same settings: reused
    monkeypatch.setitem(msdm.SPEC.presets, "audio-fast", {**msdm.SPEC.presets["audio-fast"], "n_steps": 12})
    setup = sb.prepare(data, "slakh", "test", prior, runs, max_chunks=1, seed=1, device="cpu", **SHORT)
    sb.run_benchmark(setup, cache=cache, progress=False, on_result=lambda r, c: computed.append(r.name))
    assert computed == ["msdm:fast", "msdm:fast"]  # same preset name, new values: recomputed


@pytest.mark.parametrize(
    "case",
    [
        "layout",
        "musdb_as_slakh",
        "empty_root",
        "stems",
        "operator",
        "sampler",
        "sampler_set",
        "n_samples",
        "chunks",
        "no_train",
    ],
)
def test_bad_input_is_one_error_before_any_work(data, tmp_path, prior, monkeypatch, capsys, case):
    extra, root = list(FAST), data
    if case == "layout":
        prior.stems = ("vocals", "drums", "bass", "other")
        extra += ["--layout", "musdb"]  # a Slakh folder read as MUSDB by a MUSDB prior
    elif case == "musdb_as_slakh":
        root = tmp_path / "musdb"
        for name in ("mixture", "vocals", "drums", "bass", "other"):
            (root / "test" / "Song").mkdir(parents=True, exist_ok=True)
            sf.write(root / "test" / "Song" / f"{name}.wav", band_stems(CHUNK, SR)[0].numpy(), SR)
    elif case == "empty_root":
        root = tmp_path / "empty"
        (root / "test").mkdir(parents=True)
    elif case == "stems":
        prior.stems = ("vocals", "drums", "bass", "other")
    elif case == "operator":
        import mgdm_audio.samplers.run as run_module

        real = run_module.get_sampler

        def refuse(problem):
            raise UserInputError("sampler 'msdm' cannot handle this operator.")

        monkeypatch.setattr(
            run_module,
            "get_sampler",
            lambda name: dataclasses.replace(real(name), problem_check=refuse) if name == "msdm" else real(name),
        )
    elif case == "sampler":
        extra += ["--samplers", "nope"]
    elif case == "sampler_set":
        extra += ["--sampler-set", "x=mgdm:fast:no_such_setting=1"]
    elif case == "n_samples":
        extra += ["--sampler-set", "x=mgdm:fast:n_samples=true"]
    elif case == "chunks":
        extra += ["--max-chunks", "0"]
    elif case == "no_train":  # the wiener baseline needs ROOT/train
        import shutil

        shutil.rmtree(root / "train")
    calls_before = prior.calls
    out = tmp_path / "r.json"
    code = _cli(root, tmp_path, *extra, "--json", str(out))
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1, err
    assert prior.calls == calls_before and not out.exists()


def test_bsseval_rows(data, tmp_path, prior):
    pytest.importorskip("museval")
    runs = [RunSpec("irm", sb.ORACLE_PRESET, (), "irm"), RunSpec("mixture", sb.ORACLE_PRESET, (), "mixture")]
    setup = sb.prepare(data, "slakh", "test", prior, runs, max_chunks=1, seed=0, device="cpu", **SHORT)
    summary = sb.summarise(sb.run_benchmark(setup, bsseval=True, progress=False))
    assert summary["irm"]["sdr_average"] > summary["mixture"]["sdr_average"] + 20
    assert all(v is not None for v in summary["irm"]["sdr_median"].values())


def test_sharded_ranks_split_the_chunks_and_rank0_merges(data, tmp_path, prior):
    runs = sb.make_runs(["msdm"], "fast")
    setup = sb.prepare(data, "slakh", "test", prior, runs, max_chunks=4, seed=0, device="cpu", **SHORT)
    reference = sb.run_benchmark(setup, cache=None, progress=False)
    cache = tmp_path / "shared.jsonl"
    computed: dict[int, list[str]] = {0: [], 1: []}
    for rank in (1, 0):  # rank 1 finishes first; rank 0 passes the (no-op) barrier and merges
        out = sb.run_benchmark(
            setup,
            cache=cache,
            progress=False,
            on_result=lambda run, chunk, r=rank: computed[r].append(chunk.chunk_id),
            rank=rank,
            world_size=2,
            barrier=lambda: None,
        )
        assert (out is None) == (rank == 1)
    ids = [c.chunk_id for c in setup.chunks]
    assert sorted(set(computed[0])) == sorted(ids[0::2]) and sorted(set(computed[1])) == sorted(ids[1::2])
    drop = ("seconds",)  # wall time differs between runs; everything else is deterministic
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(out) == strip(reference)
    assert cache.exists() and not list(tmp_path.glob("shared.jsonl.rank*"))
    assert len(read_cache(cache)) == len(runs) * 4
    with pytest.raises(UserInputError, match="--cache"):
        sb.run_benchmark(setup, cache=None, progress=False, rank=0, world_size=2)
