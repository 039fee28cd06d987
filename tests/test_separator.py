"""The Separator and `mgdm-audio separate`: known-answer recovery across chunks, consistency, determinism,
spread, bad input, and the output layout."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from mgdm_audio.audio.separator import Separator
from mgdm_audio.cli import main
from mgdm_audio.core.errors import UserInputError
from tests.audio_priors_for_tests import BandPrior, band_stems

SR = 8000


def _snr_db(est, ref):
    return 10 * torch.log10(ref.pow(2).sum(-1) / (est - ref).pow(2).sum(-1))


@pytest.fixture
def prior():
    return BandPrior(sample_rate=SR, chunk_samples=1024)


def test_recovers_band_stems_across_chunk_boundaries(prior):
    x = band_stems(6000, SR, seed=1)
    separator = Separator(prior, sampler="pigdm", preset="fast", seed=0, sampler_overrides={"n_steps": 100})
    result = separator.separate_tensor(x.sum(0), SR)
    assert result.stems.shape == (4, 1, 6000) and result.info["chunks"] >= 5
    assert result.info["overlap_conditioning"] is True and result.info["channel_mapping"] is None
    stems = result.stems[:, 0]
    snr = _snr_db(stems, x)
    assert bool((snr > 15).all()), snr
    # no seams: the error around chunk boundaries is not much larger than elsewhere
    err = (stems - x).pow(2).sum(0)
    hop = result.info["chunk_samples"] - result.info["overlap_samples"]
    edges = torch.zeros_like(err, dtype=torch.bool)
    for k in range(1, 6):
        for b in (k * hop, k * hop + result.info["overlap_samples"]):
            edges[max(0, b - 16) : b + 16] = True
    edges[-100:] = False
    assert float(err[edges].mean()) < 3 * float(err[~edges].mean())


def test_stems_sum_to_the_mix_and_determinism(prior):
    x = band_stems(2500, SR, seed=2)
    mix = x.sum(0)
    sep = Separator(prior, sampler="mgdm", preset="fast", seed=3)
    a = sep.separate_tensor(mix, SR)
    assert float((a.stems[:, 0].sum(0) - mix).abs().max()) <= 1e-3 * float(mix.abs().max())
    b = Separator(prior, sampler="mgdm", preset="fast", seed=3).separate_tensor(mix, SR)
    c = Separator(prior, sampler="mgdm", preset="fast", seed=4).separate_tensor(mix, SR)
    assert torch.equal(a.stems, b.stems) and not torch.equal(a.stems, c.stems)
    assert a.info["nfe"] > 0 and a.info["vjp"] > 0 and a.info["real_time_factor"] > 0


def test_several_samples_give_mean_and_spread(prior):
    x = band_stems(1500, SR, seed=3)
    r = Separator(prior, sampler="msdm", preset="fast", n_samples=3, seed=0).separate_tensor(x.sum(0), SR)
    assert r.samples.shape == (3, 4, 1, 1500) and r.spread.shape == (4, 1, 1500)
    assert torch.allclose(r.stems, r.samples.mean(0)) and float(r.spread.mean()) > 0
    assert r.info["overlap_conditioning"] is False  # MSDM's sampler knows only the plain sum


def test_silence_loud_stereo_and_resampling(prior):
    silent = Separator(prior, sampler="msdm", preset="fast").separate_tensor(torch.zeros(2000), SR)
    assert torch.equal(silent.stems, torch.zeros(4, 1, 2000))
    loud = band_stems(1200, SR).sum(0) * 200  # far beyond [-1, 1]
    out = Separator(prior, sampler="msdm", preset="fast").separate_tensor(loud.clamp(-1, 1), SR)
    assert torch.isfinite(out.stems).all()
    stereo = torch.stack([loud, -0.5 * loud]) / 400
    r = Separator(prior, sampler="msdm", preset="fast", output="prior").separate_tensor(stereo, 16000)
    assert r.info["downmix"].startswith("mid") and r.stems.shape == (4, 1, 600) and r.sample_rate == SR


def test_bad_tensors_and_settings(prior):
    sep = Separator(prior, sampler="msdm", preset="fast")
    with pytest.raises(UserInputError, match="mono or stereo"):
        sep.separate_tensor(torch.zeros(3, 100), SR)
    with pytest.raises(UserInputError, match="NaN"):
        sep.separate_tensor(torch.tensor([0.0, float("nan")]), SR)
    with pytest.raises(UserInputError, match="empty"):
        sep.separate_tensor(torch.zeros(0), SR)
    with pytest.raises(UserInputError, match="unknown sampler"):
        Separator(prior, sampler="nope")
    with pytest.raises(UserInputError, match="preset"):
        Separator(prior, sampler="mgdm", preset="nope")
    with pytest.raises(UserInputError, match="overlap"):
        Separator(prior, overlap=0.6)
    with pytest.raises(UserInputError, match="unknown prior"):
        Separator("no-such-prior")


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture
def band_prior_cli(monkeypatch, prior):
    """`mgdm-audio separate -n band-toy` resolves to the toy prior (no weights on disk needed)."""
    import mgdm_audio.audio.separator as separator_module

    real_load = separator_module.load_prior
    monkeypatch.setattr(
        separator_module,
        "load_prior",
        lambda name, device: prior if str(name) == "band-toy" else real_load(name, device),
    )
    return prior


def _write_mix(path, seconds=0.4, channels=1, seed=0):
    x = band_stems(int(seconds * SR), SR, seed=seed).sum(0).numpy()
    data = x if channels == 1 else np.stack([x] * channels, 1)
    sf.write(path, data, SR, subtype="PCM_16")
    return x


def test_cli_writes_layout_and_run_json(tmp_path, band_prior_cli):
    _write_mix(tmp_path / "song.wav")
    out = tmp_path / "out"
    args = ["separate", str(tmp_path / "song.wav"), "-n", "band-toy", "-o", str(out), "--sampler", "msdm"]
    assert main([*args, "--preset", "fast", "--no-progress", "--n-samples", "2", "--plot"]) == 0
    track = out / "band-toy" / "song"
    for stem in ("bass", "drums", "guitar", "piano"):
        assert (track / f"{stem}.wav").is_file() and (track / "samples" / f"{stem}_1.wav").is_file()
    run = json.loads((track / "run.json").read_text())
    for key in ("prior", "weights_sha256", "sampler", "preset", "seed", "versions", "nfe", "vjp", "seconds"):
        assert key in run
    assert run["real_time_factor"] > 0 and set(run["relative_spread"]) == {"bass", "drums", "guitar", "piano"}
    assert (track / "separation.png").is_file()
    stems = np.stack([sf.read(track / f"{s}.wav")[0] for s in ("bass", "drums", "guitar", "piano")])
    mix = sf.read(tmp_path / "song.wav")[0]
    assert np.abs(stems.sum(0) - mix).max() < 4 / 32768 + 1e-3 * np.abs(mix).max()
    # existing outputs: refused without --force, skipped with --skip-existing, overwritten with --force
    assert main([*args, "--preset", "fast", "--no-progress"]) == 2
    assert main([*args, "--preset", "fast", "--no-progress", "--skip-existing"]) == 0
    assert main([*args, "--preset", "fast", "--no-progress", "--force", "--two-stems", "drums", "--flac"]) == 0
    assert (track / "drums.flac").is_file() and (track / "no_drums.flac").is_file()


@pytest.mark.parametrize(
    "case",
    ["missing", "empty_dir", "not_audio", "truncated", "zero_length", "nan", "channels", "prior", "sampler", "out"],
)
def test_cli_bad_input_exits_2_without_outputs(tmp_path, band_prior_cli, capsys, case):
    good = tmp_path / "good.wav"
    _write_mix(good)
    inputs, extra, out = [str(good)], [], tmp_path / "out"
    if case == "missing":
        inputs = [str(tmp_path / "nope.wav")]
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        inputs = [str(tmp_path / "empty")]
    elif case == "not_audio":
        (tmp_path / "notes.wav").write_text("not audio at all")
        inputs = [str(tmp_path / "notes.wav")]
    elif case == "truncated":
        data = good.read_bytes()
        (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
        inputs = [str(good), str(tmp_path / "cut.wav")]
    elif case == "zero_length":
        sf.write(tmp_path / "zero.wav", np.zeros(0), SR)
        inputs = [str(tmp_path / "zero.wav")]
    elif case == "nan":
        sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1] * 100), SR, subtype="FLOAT")
        inputs = [str(tmp_path / "nan.wav")]
    elif case == "channels":
        _write_mix(tmp_path / "three.wav", channels=3)
        inputs = [str(tmp_path / "three.wav")]
    elif case == "prior":
        extra = ["-n", "no-such-prior"]
    elif case == "sampler":
        extra = ["--sampler", "nope"]
    elif case == "out":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub"
    args = ["separate", *inputs, "-o", str(out), "--preset", "fast", "--no-progress", "--sampler", "msdm"]
    if "-n" not in extra:
        args += ["-n", "band-toy"]
    code = main([*args, *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1, err
    assert not (out / "band-toy").exists() or not any((out / "band-toy").rglob("*.wav"))
