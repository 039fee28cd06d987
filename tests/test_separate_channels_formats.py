"""Stems at the input's channels, rate and bit depth; M4A input and MP3 output; progress, clipping and error
messages of `mgdm-audio separate` (issue 23)."""

import json

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from mgdm_audio.audio.remix import ChannelMapper, map_to_input
from mgdm_audio.audio.separator import Separator
from mgdm_audio.cli import main
from mgdm_audio.core.errors import UserInputError
from tests.audio_priors_for_tests import BandPrior, band_stems

PRIOR_RATE, RATE = 8000, 44100
STEMS = ("bass", "drums", "guitar", "piano")


@pytest.fixture
def prior():
    return BandPrior(sample_rate=PRIOR_RATE, chunk_samples=1024)


@pytest.fixture
def band_prior_cli(monkeypatch, prior):
    import mgdm_audio.audio.separator as separator_module

    monkeypatch.setattr(separator_module, "load_prior", lambda name, device: prior)
    return prior


def _stereo_mix(seconds=0.4, seed=1, peak=0.8):
    x = band_stems(int(seconds * RATE), RATE, seed=seed).float()
    pan = torch.tensor([[0.9, 0.2, 0.6, 0.4], [0.1, 0.8, 0.4, 0.6]])
    mix = (pan[:, :, None] * x[None]).sum(1)
    return mix * (peak / float(mix.abs().max()))


def test_stereo_44k_input_gives_stereo_44k_stems_that_sum_to_it(prior):
    mix = _stereo_mix()
    result = Separator(prior, sampler="pigdm", preset="fast", seed=0).separate_tensor(mix, RATE)
    assert result.stems.shape == (4, 2, mix.shape[-1]) and result.sample_rate == RATE
    rel = (result.stems.double().sum(0) - mix.double()).abs().max() / mix.abs().max()
    assert float(rel) <= 1e-4, float(rel)
    # the input-rate stems are exactly the prior-rate stems mapped (what the evaluation script scores)
    low = Separator(prior, sampler="pigdm", preset="fast", seed=0, output="prior").separate_tensor(mix, RATE)
    assert low.stems.shape[1:] == (1, round(mix.shape[-1] * PRIOR_RATE / RATE)) and low.sample_rate == PRIOR_RATE
    mapper = ChannelMapper(4, 2, RATE, PRIOR_RATE)
    mapper.push_mix(mix)
    blocks = [b for b, _ in map_to_input([low.stems[:, 0][None]], mapper, PRIOR_RATE, RATE, mix.shape[-1])]
    assert torch.equal(torch.cat(blocks, -1)[0], result.stems)
    assert result.info["channel_mapping"].startswith("ratio masks") and result.info["mapping_seconds"] > 0


def test_progress_follows_the_sampler_steps(prior):
    states = []
    sep = Separator(prior, sampler="pigdm", preset="fast", batch_chunks=4, callback=states.append)
    sep.separate_tensor(band_stems(6000, PRIOR_RATE, seed=1).sum(0), PRIOR_RATE)
    done = [s["done_chunks"] for s in states]
    total = states[0]["total_chunks"]
    assert done == sorted(done) and done[-1] == total and total >= 7
    assert 0 < min(d for d in done if d > 0) < 1  # the first tick comes inside the first batch of chunks
    assert abs(states[-1]["done_seconds"] - 6000 / PRIOR_RATE) < 1e-9


def _cli(tmp_path, inputs, *extra):
    out = tmp_path / "out"
    args = ["separate", *map(str, inputs), "-n", "band-toy", "-o", str(out), "--sampler", "msdm", "--preset", "fast"]
    return main([*args, "--no-progress", *extra]), out / "band-toy"


def test_cli_keeps_channels_rate_and_bit_depth(tmp_path, band_prior_cli):
    mix = _stereo_mix()
    sf.write(tmp_path / "song.wav", mix.T.numpy(), RATE, subtype="PCM_24")
    code, root = _cli(tmp_path, [tmp_path / "song.wav"], "--plot")
    assert code == 0
    stems = []
    for stem in STEMS:
        info = sf.info(root / "song" / f"{stem}.wav")
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 2, "PCM_24")
        stems.append(sf.read(root / "song" / f"{stem}.wav")[0])
    back = sf.read(tmp_path / "song.wav")[0]
    assert np.abs(np.sum(stems, 0) - back).max() < 4 / 2**23 + 1e-4 * np.abs(back).max()
    run = json.loads((root / "song" / "run.json").read_text())
    assert (run["sample_rate"], run["channels"], run["prior_sample_rate"], run["output_subtype"]) == (
        RATE,
        2,
        PRIOR_RATE,
        "PCM_24",
    )
    assert (root / "song" / "separation.png").is_file()
    code, _ = _cli(tmp_path, [tmp_path / "song.wav"], "--prior-rate-mono", "--force")
    info = sf.info(root / "song" / "bass.wav")
    assert code == 0 and (info.samplerate, info.channels, info.subtype) == (PRIOR_RATE, 1, "PCM_16")


def test_m4a_input_and_mp3_output_at_the_input_rate(tmp_path, band_prior_cli):
    mix = _stereo_mix(seconds=0.5).numpy()
    with av.open(str(tmp_path / "song.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=RATE)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mix), format="fltp", layout="stereo")
        frame.sample_rate = RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    code, root = _cli(tmp_path, [tmp_path / "song.m4a"], "--mp3", "--mp3-bitrate", "128")
    assert code == 0
    for stem in STEMS:
        with av.open(str(root / "song" / f"{stem}.mp3")) as container:
            stream = container.streams.audio[0]
            assert (stream.codec_context.sample_rate, stream.codec_context.channels) == (RATE, 2)
            assert stream.bit_rate == 128_000
    decoded = sf.read(root / "song" / "drums.mp3")[0]
    assert decoded.shape[1] == 2 and abs(decoded.shape[0] - mix.shape[1]) < 4096


def test_mp3_refuses_a_rate_it_cannot_store(tmp_path, band_prior_cli, capsys):
    sf.write(tmp_path / "odd.wav", _stereo_mix().T.numpy(), 96000)
    code, root = _cli(tmp_path, [tmp_path / "odd.wav"], "--mp3")
    assert code == 2 and "MP3 cannot store 96000 Hz" in capsys.readouterr().err and not root.exists()


def test_clipping_is_one_note_and_rescale_keeps_the_peak(tmp_path, band_prior_cli, capsys, recwarn):
    sf.write(tmp_path / "loud.wav", _stereo_mix(peak=5.0).T.numpy(), RATE, subtype="FLOAT")
    code, root = _cli(tmp_path, [tmp_path / "loud.wav"], "--int24")
    err = capsys.readouterr().err
    assert code == 0 and err.count("note:") == 1 and "--clip-mode rescale" in err and "--float32" in err
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    code, _ = _cli(tmp_path, [tmp_path / "loud.wav"], "--int24", "--clip-mode", "rescale", "--force")
    run = json.loads((root / "loud" / "run.json").read_text())
    assert code == 0 and "note:" not in capsys.readouterr().err and run["rescale_factor"] < 1
    stems = np.sum([sf.read(root / "loud" / f"{s}.wav")[0] for s in STEMS], 0)
    back = sf.read(tmp_path / "loud.wav")[0]
    assert np.abs(stems - back * run["rescale_factor"]).max() < 1e-4  # still the mix, times one factor
    code, _ = _cli(tmp_path, [tmp_path / "loud.wav"], "--force")  # float input: float stems, nothing clipped
    assert code == 0 and "note:" not in capsys.readouterr().err
    assert sf.info(root / "loud" / "bass.wav").subtype == "FLOAT"


def test_an_error_during_separation_closes_the_bar_and_stands_on_its_own_line(
    tmp_path, band_prior_cli, capsys, monkeypatch
):
    sf.write(tmp_path / "song.wav", _stereo_mix(seconds=1.0).T.numpy(), RATE)
    real = Separator._separate_chunks
    calls = []

    def fail_second(self, *args):
        calls.append(1)
        if len(calls) > 1:
            raise UserInputError("the disk is full (simulated)")
        return real(self, *args)

    monkeypatch.setattr(Separator, "_separate_chunks", fail_second)
    out = tmp_path / "out"
    args = ["separate", str(tmp_path / "song.wav"), "-n", "band-toy", "-o", str(out), "--sampler", "msdm"]
    assert main([*args, "--preset", "fast"]) == 2
    err = capsys.readouterr().err
    assert "s of audio" in err  # the bar was shown
    assert "\nmgdm-audio: error: the disk is full (simulated)" in err
    assert not list(out.rglob("*.wav")) and not list(out.rglob("*.part"))
