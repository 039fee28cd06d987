"""MusdbDataset on a real MUSDB18 ``.stem.mp4`` (5 stereo AAC streams) encoded here by ffmpeg, read through musdb.

The fixture is a 2 s track at 44,100 Hz: one sine per stem (drums 220 Hz, bass 110 Hz, other 550 Hz, vocals 880 Hz;
left channel amplitude 0.2, right 0.1, so the mono mean has amplitude 0.15) with 20 ms fades, and the mixture = their
sum, written as streams 0..4 = mixture, drums, bass, other, vocals (MUSDB18's order, musdb's ``stem_ids``). AAC is
lossy, so stems are checked by their dominant frequency and RMS (1 % tolerance; measured within 0.1 %), not sample
by sample.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mgdm_audio.audio.data.readers import MusdbDataset
from mgdm_audio.core.errors import UserInputError

pytest.importorskip("musdb")
if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
    pytest.skip("ffmpeg/ffprobe are not on PATH (needed to encode and decode .stem.mp4)", allow_module_level=True)

RATE = 44100
SECONDS = 2.0
FREQUENCIES = {"drums": 220.0, "bass": 110.0, "other": 550.0, "vocals": 880.0}
STREAM_ORDER = ("mixture", "drums", "bass", "other", "vocals")  # MUSDB18 .stem.mp4 stream order
MONO_AMPLITUDE = 0.15  # mean of L = 0.2 and R = 0.1
TRACK = "Artist - Song"


def _stereo_sine(frequency: float, n: int) -> np.ndarray:
    t = np.arange(n) / RATE
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.02 * RATE))
    wave = np.sin(2 * np.pi * frequency * t) * fade
    return np.stack([0.2 * wave, 0.1 * wave], axis=1)


def _write_stem_mp4(path: Path, n: int = int(SECONDS * RATE), streams: tuple[str, ...] = STREAM_ORDER) -> None:
    """Encode the fixture streams (stereo AAC, 192 kb/s each) into one mp4 with ffmpeg."""
    stems = {name: _stereo_sine(f, n) for name, f in FREQUENCIES.items()}
    audio = {"mixture": sum(stems.values()), **stems}
    work = path.parent / f".{path.name}.parts"
    work.mkdir(parents=True)
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    for name in streams:
        sf.write(work / f"{name}.wav", audio[name].astype(np.float32), RATE, subtype="FLOAT")
        command += ["-i", str(work / f"{name}.wav")]
    for index in range(len(streams)):
        command += ["-map", f"{index}:a"]
    command += ["-c:a", "aac", "-b:a", "192k", str(path)]
    subprocess.run(command, check=True, capture_output=True)
    shutil.rmtree(work)


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("musdb18")
    _write_stem_mp4(root / "test" / f"{TRACK}.stem.mp4")
    return root


def _dominant_frequency(signal: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal.double().numpy() * np.hanning(signal.shape[-1])))
    return float(np.fft.rfftfreq(signal.shape[-1], 1.0 / rate)[int(np.argmax(spectrum))])


def _rms(signal: torch.Tensor) -> float:
    return float(signal.double().pow(2).mean().sqrt())


def test_stems_are_found_and_mapped_by_name(musdb_root: Path) -> None:
    stems = ("vocals", "drums", "bass", "other")
    ds = MusdbDataset(musdb_root, subset="test", stems=stems, sample_rate=RATE, chunk_samples=22050)
    assert ds.track_names == [TRACK]
    assert ds.tracks[0].layout == "musdb18"
    assert ds.tracks[0].length == int(SECONDS * RATE)  # the stream duration, not the AAC-padded decode
    full = ds.load_track(0)
    assert full.shape == (4, int(SECONDS * RATE)) and full.dtype == torch.float32
    middle = slice(RATE // 4, RATE * 7 // 4)  # away from the fades and AAC's edge artefacts
    for k, stem in enumerate(stems):
        assert abs(_dominant_frequency(full[k, middle], RATE) - FREQUENCIES[stem]) < 2.0, stem
        # a sine of amplitude 0.15 (mono = mean of L/R) has RMS 0.15 / sqrt(2)
        assert _rms(full[k, middle]) == pytest.approx(MONO_AMPLITUDE / np.sqrt(2), rel=0.01), stem
    # another order / subset of stems follows the names, not the stream positions
    two = MusdbDataset(musdb_root, stems=("bass", "vocals"), sample_rate=RATE, chunk_samples=22050)
    torch.testing.assert_close(two.load_track(0), full[[2, 0]])


def test_sequential_chunks_and_mixture_crop(musdb_root: Path) -> None:
    ds = MusdbDataset(musdb_root, sample_rate=RATE, chunk_samples=30000, return_mixture=True, keep_partial=True)
    # 88,200 samples: chunks at 0, 30,000 and a zero-padded partial one at 60,000
    assert ds.chunk_index == [(TRACK, 0), (TRACK, 30000), (TRACK, 60000)]
    full_stems, full_mix = ds.load_track(0), ds.load_mixture(0)
    assert full_mix is not None and full_mix.shape == (1, int(SECONDS * RATE))
    stems, mix = ds[1]
    assert stems.shape == (4, 30000) and mix.shape == (1, 30000)
    torch.testing.assert_close(stems, full_stems[:, 30000:60000])
    torch.testing.assert_close(mix, full_mix[:, 30000:60000])  # the provided mixture stream, same crop
    # the mixture stream is coded separately: it equals the sum of the stems up to AAC's error (measured 0.7 % RMS)
    error = _rms(mix[0] - stems.sum(0)) / _rms(mix[0])
    assert error < 0.03
    tail_stems, tail_mix = ds[2]
    assert tail_stems.shape == (4, 30000) and bool((tail_stems[:, 28200:] == 0).all())
    assert bool((tail_mix[:, 28200:] == 0).all()) and _rms(tail_mix[:, : 28200 - RATE // 10]) > 0.1


def test_resampling_to_the_requested_rate(musdb_root: Path) -> None:
    low = MusdbDataset(musdb_root, sample_rate=22050, chunk_samples=8192, mode="random", seed=3, in_memory=True)
    assert low.tracks[0].length == int(SECONDS * 22050)
    assert len(low) == int(SECONDS * 22050) // 8192
    item = low[0]
    assert item.shape == (4, 8192)
    full = low.load_track(0)
    mix = low.load_mixture(0)
    assert full.shape == (4, 44100) and mix is not None and mix.shape == (1, 44100)
    middle = slice(22050 // 4, 22050 * 7 // 4)
    for k, stem in enumerate(low.stems):
        assert abs(_dominant_frequency(full[k, middle], 22050) - FREQUENCIES[stem]) < 2.0, stem
        assert _rms(full[k, middle]) == pytest.approx(MONO_AMPLITUDE / np.sqrt(2), rel=0.01), stem
    track, start = low.crop_position(0)
    torch.testing.assert_close(item, full[:, start : start + 8192])


def test_bad_stem_names_and_bad_files_are_user_errors(tmp_path: Path) -> None:
    _write_stem_mp4(tmp_path / "test" / f"{TRACK}.stem.mp4", n=RATE // 2)
    with pytest.raises(UserInputError, match=r"no stems \['guitar'\]"):
        MusdbDataset(tmp_path, stems=("vocals", "guitar"), chunk_samples=4096)
    (tmp_path / "test" / "Broken.stem.mp4").write_bytes(b"\x00" * 256)
    with pytest.raises(UserInputError, match=r"Broken\.stem\.mp4 could not be read"):
        MusdbDataset(tmp_path, chunk_samples=4096)
    (tmp_path / "test" / "Broken.stem.mp4").unlink()
    _write_stem_mp4(tmp_path / "test" / "Two Streams.stem.mp4", n=RATE // 2, streams=("mixture", "drums"))
    with pytest.raises(UserInputError, match="has 2 audio streams"):
        MusdbDataset(tmp_path, chunk_samples=4096)
