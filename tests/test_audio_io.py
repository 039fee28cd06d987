"""Audio I/O: round trips, atomic writes, block reader/writer, resampler, bad-file errors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from mgdm_audio.audio import io
from mgdm_audio.audio.io import (
    StreamingWriter,
    audio_info,
    iter_blocks,
    read_audio,
    read_segment,
    resample,
    to_mono,
    write_audio,
)
from mgdm_audio.core.errors import InternalError, UserInputError


def _signal(channels: int = 2, n: int = 6000, seed: int = 0) -> torch.Tensor:
    return (0.3 * torch.randn(channels, n, generator=torch.Generator().manual_seed(seed))).clamp(-0.99, 0.99)


@pytest.mark.parametrize(
    ("fmt", "subtype", "atol"),
    [
        ("wav", "PCM_16", 1.0 / 2**15),
        ("wav", "PCM_24", 1.0 / 2**23),
        ("wav", "FLOAT", 0.0),
        ("flac", "PCM_16", 1.0 / 2**15),
        ("flac", "PCM_24", 1.0 / 2**23),
    ],
)
def test_round_trip_per_format_and_subtype(tmp_path: Path, fmt: str, subtype: str, atol: float) -> None:
    wav = _signal()
    path = tmp_path / f"x.{fmt}"
    assert write_audio(path, wav, 22050, subtype=subtype) is False
    back, sr = read_audio(path)
    assert sr == 22050 and back.dtype == torch.float32 and back.shape == wav.shape
    torch.testing.assert_close(back, wav, atol=atol, rtol=0)
    info = audio_info(path)
    assert (info.sample_rate, info.frames, info.channels) == (22050, 6000, 2)
    assert math.isclose(info.duration_s, 6000 / 22050)
    assert os.listdir(tmp_path) == [path.name]  # no temporary left behind


def test_mp3_round_trip_keeps_the_waveform(tmp_path: Path) -> None:
    t = torch.arange(44100) / 44100
    wav = (0.5 * torch.sin(2 * math.pi * 440 * t))[None]
    path = tmp_path / "tone.mp3"
    write_audio(path, wav, 44100)
    back, sr = read_audio(path)
    assert sr == 44100 and back.shape[0] == 1 and abs(back.shape[1] - 44100) <= 2304
    # lossy codec, possibly with an encoder delay: align by cross-correlation (libsndfile 1.2 decodes gaplessly:
    # lag 0, relative error 0.3 %), then the tone must match to 5 %
    n = min(back.shape[1], 44100) - 6000
    ref = wav[0, 3000 : 3000 + n].numpy()
    lags = [float(np.dot(back[0, 3000 + k : 3000 + k + n].numpy(), ref)) for k in range(-2400, 2400)]
    k = int(np.argmax(lags)) - 2400
    err = back[0, 3000 + k : 3000 + k + n].numpy() - ref
    assert np.sqrt(np.mean(err**2)) < 0.05 * np.sqrt(np.mean(ref**2))


def test_integer_subtypes_clip_with_flag_and_warning_float_keeps_values(tmp_path: Path) -> None:
    wav = torch.tensor([[0.5, 1.5, -2.0, 0.25]])
    with pytest.warns(UserWarning, match="clipped"):
        assert write_audio(tmp_path / "c.wav", wav, 8000, subtype="PCM_16") is True
    back, _ = read_audio(tmp_path / "c.wav")
    assert back.max() <= 1.0 and back.min() >= -1.0 and back[0, 2] == -1.0
    assert write_audio(tmp_path / "f.wav", wav, 8000, subtype="FLOAT") is False
    torch.testing.assert_close(read_audio(tmp_path / "f.wav")[0], wav)
    with pytest.raises(UserInputError, match="FLOAT.*flac"):
        write_audio(tmp_path / "f.flac", wav, 8000, subtype="FLOAT")
    with pytest.raises(UserInputError, match="Unsupported audio format"):
        write_audio(tmp_path / "f.xyz", wav, 8000)
    with pytest.raises(UserInputError, match="NaN"):
        write_audio(tmp_path / "n.wav", torch.tensor([[0.0, float("nan")]]), 8000)


def test_atomic_write_leaves_no_partial_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.wav"
    write_audio(path, _signal(1, 100), 8000)
    before = path.read_bytes()
    real_write = sf.write

    def write_then_fail(file: str, data: np.ndarray, *args: object, **kwargs: object) -> None:
        real_write(file, data[: len(data) // 2], *args, **kwargs)  # a partial file exists, then the "disk" fails
        raise OSError("disk full")

    monkeypatch.setattr(io.sf, "write", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_audio(path, _signal(1, 5000, seed=1), 8000)
    assert path.read_bytes() == before
    with pytest.raises(OSError, match="disk full"):
        write_audio(tmp_path / "new.wav", _signal(1, 5000), 8000)
    assert sorted(os.listdir(tmp_path)) == ["out.wav"]


def test_block_reader_reassembles_the_file_exactly(tmp_path: Path) -> None:
    wav = _signal(2, 10007)
    path = tmp_path / "x.flac"
    write_audio(path, wav, 22050, subtype="PCM_24")
    full, _ = read_audio(path)
    blocks = list(iter_blocks(path, 1000))
    assert [b.shape for b in blocks] == [(2, 1000)] * 10 + [(2, 7)]
    assert all(b.dtype == torch.float32 for b in blocks)
    assert torch.equal(torch.cat(blocks, dim=-1), full)
    mono = torch.cat(list(iter_blocks(path, 4096, mono=True)), dim=-1)
    torch.testing.assert_close(mono, to_mono(full))
    with pytest.raises(UserInputError, match="block_frames"):
        next(iter_blocks(path, 0))


def test_streaming_writer_commit_abort_and_exception(tmp_path: Path) -> None:
    wav = _signal(2, 5000)
    path = tmp_path / "stream.wav"
    with StreamingWriter(path, 22050, channels=2, subtype="FLOAT") as writer:
        for start in range(0, 5000, 1200):
            writer.write(wav[:, start : start + 1200])
            assert not path.exists()  # invisible until committed
    assert writer.frames_written == 5000
    torch.testing.assert_close(read_audio(path)[0], wav)
    old = path.read_bytes()
    writer = StreamingWriter(path, 22050, channels=2)
    writer.write(wav[:, :100])
    writer.abort()
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["stream.wav"]
    with pytest.raises(RuntimeError, match="boom"), StreamingWriter(tmp_path / "b.flac", 22050, channels=2) as w2:
        w2.write(wav[:, :100])
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["stream.wav"]
    with StreamingWriter(tmp_path / "loud.wav", 8000, channels=1) as w3:  # counted, no warning: the caller notes it
        w3.write(torch.tensor([[0.2, 3.0, -1.5]]))
    assert w3.clipped and w3.clipped_samples == 2 and w3.peak == 3.0
    torch.testing.assert_close(
        read_audio(tmp_path / "loud.wav")[0], torch.tensor([[0.2, 1.0, -1.0]]), atol=1e-4, rtol=0
    )
    with StreamingWriter(tmp_path / "scaled.wav", 8000, channels=1, deferred=True) as w5:
        w5.write(torch.tensor([[0.2, 3.0, -1.5]]))
        w5.commit(1 / 3)  # deferred: encoded on commit, times the factor
    torch.testing.assert_close(
        read_audio(tmp_path / "scaled.wav")[0], torch.tensor([[0.2 / 3, 1.0, -0.5]]), atol=1e-4, rtol=0
    )
    assert w5.clipped_samples == 0 and not list(tmp_path.glob(".*.part"))
    with pytest.raises(InternalError, match="channels"), StreamingWriter(tmp_path / "m.wav", 8000, channels=1) as w4:
        w4.write(wav[:, :10])
    assert not (tmp_path / "m.wav").exists()


def test_read_audio_bad_files_each_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        read_audio(tmp_path / "absent.wav")
    with pytest.raises(UserInputError, match="is a folder"):
        read_audio(tmp_path)
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(UserInputError, match="not a readable audio file"):
        read_audio(tmp_path / "text.wav")
    sf.write(str(tmp_path / "empty.wav"), np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(UserInputError, match="zero length"):
        read_audio(tmp_path / "empty.wav")
    nan = np.zeros((100, 1), np.float32)
    nan[50] = np.inf
    sf.write(str(tmp_path / "inf.wav"), nan, 8000, subtype="FLOAT")
    with pytest.raises(UserInputError, match="NaN or infinite"):
        read_audio(tmp_path / "inf.wav")
    with pytest.raises(UserInputError, match="NaN or infinite"):
        list(iter_blocks(tmp_path / "inf.wav", 16))
    write_audio(tmp_path / "surround.wav", _signal(6, 100), 8000)
    assert read_audio(tmp_path / "surround.wav")[0].shape == (6, 100)
    with pytest.raises(UserInputError, match="6 channels but at most 2"):
        read_audio(tmp_path / "surround.wav", max_channels=2)
    for suffix in ("wav", "flac"):
        good = tmp_path / f"good.{suffix}"
        write_audio(good, _signal(1, 20000), 22050)
        data = good.read_bytes()
        cut = tmp_path / f"cut.{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(UserInputError, match="truncated"):
            read_audio(cut)
        with pytest.raises(UserInputError, match="truncated"):
            list(iter_blocks(cut, 1024))


@pytest.mark.parametrize(("sr_in", "sr_out"), [(44100, 22050), (22050, 44100), (48000, 44100), (16000, 22050)])
def test_resample_matches_scipy_resample_poly_on_a_sine(sr_in: int, sr_out: int) -> None:
    """Both are windowed-sinc low-passes (ours: Hann, 6 zero crossings, rolloff 0.99; scipy: Kaiser beta=5).

    For a 440 Hz sine, far inside both passbands, each output is the analytic sine up to its passband ripple
    and truncation error, measured <= 1e-3 for both (max 9e-4), so their difference is bounded by 2e-3
    (measured <= 7.1e-4). Edges (200 samples) are excluded: there both filters see the zero padding.
    """
    n = 8000
    x = np.sin(2 * np.pi * 440.0 * np.arange(n) / sr_in)
    ours = resample(torch.from_numpy(x), sr_in, sr_out).numpy()
    g = math.gcd(sr_in, sr_out)
    ref = resample_poly(x, sr_out // g, sr_in // g)
    assert len(ours) == math.ceil(n * sr_out / sr_in) == len(ref)
    analytic = np.sin(2 * np.pi * 440.0 * np.arange(len(ours)) / sr_out)
    inner = slice(200, len(ours) - 200)
    assert np.abs(ours - ref)[inner].max() < 2e-3
    assert np.abs(ours - analytic)[inner].max() < 1e-3


def test_resample_rejects_above_nyquist_and_keeps_shape_and_dtype() -> None:
    t = torch.arange(44100, dtype=torch.float64) / 44100
    above = torch.sin(2 * math.pi * 15000.0 * t)  # above the 11025 Hz Nyquist of 22050 Hz
    down = resample(above, 44100, 22050)
    # a 6-zero-crossing Hann-windowed sinc stops about 47 dB down (measured 0.0046 for amplitude 1): require 40 dB
    assert down[1000:-1000].abs().max() < 1e-2
    batch = torch.randn(3, 2, 1000)
    out = resample(batch, 22050, 16000)
    assert out.shape == (3, 2, math.ceil(1000 * 16000 / 22050)) and out.dtype == torch.float32
    assert resample(batch, 8000, 8000) is batch
    with pytest.raises(UserInputError, match="positive"):
        resample(batch, 0, 8000)


def test_to_mono_is_the_mean_of_channels() -> None:
    wav = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(to_mono(wav), torch.tensor([[0.5, 0.5, 0.0]]))


def test_read_segment_equals_slicing_the_resampled_file(tmp_path: Path) -> None:
    wav = _signal(2, 9001)
    path = tmp_path / "s.wav"
    write_audio(path, wav, 44100, subtype="FLOAT")
    for sr in (22050, 48000, 44100):
        full = resample(wav, 44100, sr)
        total = full.shape[-1]
        for start, stop in [(0, 100), (1234, 4321), (total - 50, total + 30), (total + 5, total + 9)]:
            seg = read_segment(path, start, stop, sample_rate=sr)
            ref = torch.nn.functional.pad(full[:, start:stop], (0, (stop - start) - full[:, start:stop].shape[-1]))
            torch.testing.assert_close(seg, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("sr_in", "sr_out", "n"), [(44100, 22050, 50_000), (48000, 22050, 30_001), (22050, 44100, 9)])
def test_streamed_soxr_resampling_equals_whole_signal_resampling(sr_in: int, sr_out: int, n: int) -> None:
    import soxr

    from mgdm_audio.audio.io import resample_blocks

    x = torch.randn(2, n, generator=torch.Generator().manual_seed(4))
    whole = soxr.resample(x.numpy().T, sr_in, sr_out, quality="VHQ").T
    assert whole.shape[-1] == math.floor(n * sr_out / sr_in + 0.5)
    for size in (1000, 4097, n):
        parts = torch.cat(list(resample_blocks(x.split(size, -1), sr_in, sr_out)), -1)
        assert torch.equal(parts, torch.from_numpy(np.ascontiguousarray(whole)))
