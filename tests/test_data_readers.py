"""Dataset readers on small fixture folders written here: ours, MSDM wav, raw Slakh2100, MUSDB18-HQ."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mgdm_audio.audio.data.readers import MusdbDataset, SlakhDataset
from mgdm_audio.audio.io import resample
from mgdm_audio.core.errors import UserInputError

STEMS = ("bass", "drums", "guitar", "piano")


def _noise(seed: int, n: int, scale: float = 0.1, channels: int = 1) -> np.ndarray:
    x = scale * np.random.default_rng(seed).standard_normal((n, channels))
    return x.astype(np.float32)[:, 0] if channels == 1 else x.astype(np.float32)


def _write(path: Path, data: np.ndarray, sr: int, subtype: str = "FLOAT") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "FLAC" if path.suffix == ".flac" else "WAV"
    sf.write(str(path), data, sr, format=fmt, subtype="PCM_24" if fmt == "FLAC" else subtype)


def _ramp_track(folder: Path, track_id: int, n: int, sr: int = 22050) -> None:
    """MSDM-style wav track whose bass encodes (track, sample): value = track_id * 0.1 + t * 1e-6."""
    t = np.arange(n, dtype=np.float64)
    _write(folder / "bass.wav", (track_id * 0.1 + t * 1e-6).astype(np.float32), sr)
    for k, stem in enumerate(STEMS[1:]):
        _write(folder / f"{stem}.wav", _noise(100 * track_id + k, n), sr)


@pytest.fixture()
def ramp_root(tmp_path: Path) -> Path:
    for i, n in enumerate([5000, 12000, 3000, 9000], start=1):
        _ramp_track(tmp_path / "train" / f"Track{i:05d}", i, n)
    return tmp_path


def _locate(crop: torch.Tensor) -> tuple[int, int]:
    """(track id, start sample) encoded in a ramp crop's bass row."""
    first = float(crop[0, 0])
    track = int(np.floor(first / 0.1 + 1e-6))  # the ramp adds < 0.02, so floor to the 0.1 grid
    return track, int(round((first - track * 0.1) / 1e-6))


def test_ours_layout_items_shape_dtype_and_length(tmp_path: Path) -> None:
    lengths = [30000, 50000]
    for i, n in enumerate(lengths, start=1):
        folder = tmp_path / "train" / f"Track{i:05d}"
        for k, stem in enumerate(STEMS):
            _write(folder / f"{stem}.flac", _noise(10 * i + k, n), 22050)
        _write(folder / "mix.flac", _noise(99, n), 22050)
        (folder / "metadata.json").write_text("{}")
    ds = SlakhDataset(tmp_path, chunk_samples=8192)
    assert ds.layouts == ["ours"]
    assert len(ds) == sum(lengths) // 8192
    item = ds[3]
    assert item.shape == (4, 8192) and item.dtype == torch.float32
    assert ds.load_mixture("Track00002").shape == (1, 50000)
    # a stem row equals the file (FLAC 24-bit round trip)
    track, start = ds.crop_position(3)
    ref = sf.read(str(ds.tracks[track].folder / "drums.flac"), dtype="float32")[0][start : start + 8192]
    torch.testing.assert_close(item[1], torch.from_numpy(ref))


def test_random_crops_deterministic_by_seed_and_epoch_and_inside_tracks(ramp_root: Path) -> None:
    ds = SlakhDataset(ramp_root, chunk_samples=2048, seed=3)
    lengths = {i: n for i, n in enumerate([5000, 12000, 3000, 9000], start=1)}
    assert len(ds) == sum(lengths.values()) // 2048 == 14
    epoch0 = [ds.crop_position(i) for i in range(len(ds))]
    for i in range(len(ds)):
        crop = ds[i]
        track, start = _locate(crop)
        assert (track - 1, start) == epoch0[i]
        assert 0 <= start and start + 2048 <= lengths[track]  # never crosses a track boundary
        torch.testing.assert_close(crop[0, 1:] - crop[0, :-1], torch.full((2047,), 1e-6), atol=2e-7, rtol=0)
    again = SlakhDataset(ramp_root, chunk_samples=2048, seed=3)
    assert [again.crop_position(i) for i in range(len(ds))] == epoch0
    torch.testing.assert_close(again[5], ds[5])
    ds.set_epoch(1)
    epoch1 = [ds.crop_position(i) for i in range(len(ds))]
    assert epoch1 != epoch0
    other_seed = SlakhDataset(ramp_root, chunk_samples=2048, seed=4)
    assert [other_seed.crop_position(i) for i in range(len(ds))] != epoch0
    ds.set_epoch(0)
    assert [ds.crop_position(i) for i in range(len(ds))] == epoch0
    # every track is visited over a few epochs, roughly in proportion to its length
    visits = np.zeros(5)
    for epoch in range(20):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            visits[ds.crop_position(i)[0] + 1] += 1
    assert (visits[1:] > 0).all() and visits[2] > visits[3]


def test_sequential_chunks_cover_each_track_in_order(ramp_root: Path) -> None:
    ds = SlakhDataset(ramp_root, chunk_samples=2000, mode="sequential")
    expected = [
        (f"Track{i:05d}", s) for i, n in enumerate([5000, 12000, 3000, 9000], 1) for s in range(0, n - 1999, 2000)
    ]
    assert ds.chunk_index == expected
    for i, (name, start) in enumerate(ds.chunk_index):
        assert _locate(ds[i]) == (int(name[-5:]), start)
    # the non-overlapping chunks of a track tile its prefix exactly
    tiles = torch.cat([ds[i] for i, (name, _) in enumerate(ds.chunk_index) if name == "Track00002"], dim=-1)
    torch.testing.assert_close(tiles, ds.load_track("Track00002")[:, :12000])
    hop = SlakhDataset(ramp_root, chunk_samples=2000, hop_samples=1000, mode="sequential")
    assert [s for name, s in hop.chunk_index if name == "Track00001"] == [0, 1000, 2000, 3000]
    partial = SlakhDataset(ramp_root, chunk_samples=2000, mode="sequential", keep_partial=True)
    assert [s for name, s in partial.chunk_index if name == "Track00003"] == [0, 2000]
    last = partial[partial.chunk_index.index(("Track00003", 2000))]
    assert last.shape == (4, 2000) and torch.all(last[:, 1000:] == 0) and torch.all(last[0, :1000] > 0)
    ds.set_epoch(7)
    assert ds.chunk_index == expected


def test_missing_stem_is_silence_and_mismatched_lengths_are_trimmed_with_warning(tmp_path: Path) -> None:
    one = tmp_path / "test" / "Track00001"
    for k, stem in enumerate(("bass", "drums", "piano")):  # no guitar
        _write(one / f"{stem}.wav", _noise(k, 6000), 22050)
    two = tmp_path / "test" / "Track00002"
    for k, stem in enumerate(STEMS):
        _write(two / f"{stem}.wav", _noise(10 + k, 6000 if stem != "piano" else 5500), 22050)
    with pytest.warns(UserWarning, match=r"Track00002.*shortest \(5500\)"):
        ds = SlakhDataset(tmp_path, split="test", chunk_samples=1000, mode="sequential")
    assert ds.layouts == ["msdm"]
    assert [t.length for t in ds.tracks] == [6000, 5500]
    first = ds.load_track(0)
    assert torch.all(first[2] == 0) and first[0].abs().sum() > 0
    assert ds.load_track(1).shape == (4, 5500)
    assert len(ds) == 6 + 5
    # our renderer writes metadata.json last: stems missing without it look like an interrupted render
    _write(tmp_path / "test" / "Track00003" / "bass.flac", _noise(7, 3000), 22050)
    with pytest.warns(UserWarning) as caught:
        SlakhDataset(tmp_path, split="test", chunk_samples=1000)
    assert any("Track00003" in str(w.message) and "interrupted" in str(w.message) for w in caught)


def test_active_stem_filter_counts_stems_above_silence_db(tmp_path: Path) -> None:
    n = 4000  # two chunks of 2000: chunk 0 has 1 active stem, chunk 1 has 2 (bass at -50 dBFS RMS)
    folder = tmp_path / "test" / "Track00001"
    drums = _noise(1, n)
    bass = np.zeros(n, np.float32)
    bass[2000:] = 10 ** (-50 / 20) * np.sign(_noise(2, 2000))  # square-ish: RMS exactly -50 dBFS
    _write(folder / "drums.wav", drums, 22050)
    _write(folder / "bass.wav", bass, 22050)
    kwargs = dict(split="test", chunk_samples=2000, mode="sequential")
    assert len(SlakhDataset(tmp_path, **kwargs)) == 2
    assert SlakhDataset(tmp_path, min_active_stems=2, silence_db=-60.0, **kwargs).chunk_index == [("Track00001", 2000)]
    assert len(SlakhDataset(tmp_path, min_active_stems=2, silence_db=-40.0, **kwargs)) == 0
    assert len(SlakhDataset(tmp_path, min_active_stems=1, silence_db=-40.0, **kwargs)) == 2
    in_memory = SlakhDataset(tmp_path, min_active_stems=2, in_memory=True, **kwargs)
    assert in_memory.chunk_index == [("Track00001", 2000)]


def _raw_slakh_track(folder: Path, sr: int = 44100, n: int = 8820) -> dict[str, np.ndarray]:
    entries = {
        "S00": ("Drums", True, True),
        "S01": ("Piano", False, True),
        "S02": ("Guitar", False, True),
        "S03": ("Guitar", False, True),
        "S04": ("Bass", False, True),
        "S05": ("Strings (continued)", False, True),
        "S06": ("Bass", False, False),  # not rendered: no file, ignored
    }
    lines = ["UUID: abc", "audio_dir: stems", "normalized: true", "stems:"]
    audio = {}
    for i, (key, (cls, drum, rendered)) in enumerate(entries.items()):
        lines += [f"  {key}:", f"    inst_class: {cls}", f"    is_drum: {str(drum).lower()}"]
        lines += [f"    audio_rendered: {str(rendered).lower()}", "    program_num: 0"]
        if rendered:
            audio[key] = _noise(50 + i, n, 0.05)
            _write(folder / "stems" / f"{key}.flac", audio[key], sr)
    (folder / "metadata.yaml").write_text("\n".join(lines) + "\n")
    _write(folder / "mix.flac", sum(audio.values()), sr)
    return audio


def test_raw_slakh2100_maps_classes_sums_and_resamples(tmp_path: Path) -> None:
    audio = _raw_slakh_track(tmp_path / "validation" / "Track01501")
    ds = SlakhDataset(tmp_path, split="validation", sample_rate=22050, chunk_samples=1024, mode="sequential")
    assert ds.layouts == ["slakh2100"] and ds.tracks[0].length == 4410
    got = ds.load_track(0)

    def at_22k(x: np.ndarray) -> torch.Tensor:  # the FLAC 24-bit round trip of x, resampled
        return resample(torch.from_numpy(x.astype(np.float64)), 44100, 22050).float()

    quant = {k: np.round(v * 2**23) / 2**23 for k, v in audio.items()}
    expected = [quant["S04"], quant["S00"], quant["S02"] + quant["S03"], quant["S01"]]
    for row, ref in zip(got, expected, strict=True):
        torch.testing.assert_close(row, at_22k(ref), atol=1e-5, rtol=0)
    assert len(ds) == 4410 // 1024
    forced = SlakhDataset(tmp_path, split="validation", chunk_samples=1024, layout="slakh2100", mode="sequential")
    torch.testing.assert_close(forced[1], ds[1])


def test_resampling_and_in_memory_agree_with_whole_file_resampling(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "Track00001"
    data = {stem: _noise(k, 9000) for k, stem in enumerate(STEMS)}
    for stem, x in data.items():
        _write(folder / f"{stem}.wav", x, 44100)
    streamed = SlakhDataset(tmp_path, sample_rate=22050, chunk_samples=1000, mode="sequential", hop_samples=700)
    cached = SlakhDataset(
        tmp_path, sample_rate=22050, chunk_samples=1000, mode="sequential", hop_samples=700, in_memory=True
    )
    full = torch.stack([resample(torch.from_numpy(data[s]), 44100, 22050) for s in STEMS])
    assert streamed.tracks[0].length == 4500
    for i, (_, start) in enumerate(streamed.chunk_index):
        torch.testing.assert_close(streamed[i], full[:, start : start + 1000], atol=1e-6, rtol=0)
        torch.testing.assert_close(cached[i], streamed[i], atol=1e-6, rtol=0)


def test_gain_scales_items(ramp_root: Path) -> None:
    plain = SlakhDataset(ramp_root, chunk_samples=1000, mode="sequential")
    scaled = SlakhDataset(ramp_root, chunk_samples=1000, mode="sequential", gain=2**-0.5)
    torch.testing.assert_close(scaled[2], plain[2] * 2**-0.5)


def test_slakh_bad_inputs_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        SlakhDataset(tmp_path / "nowhere")
    (tmp_path / "train").mkdir()
    with pytest.raises(UserInputError, match=r"Split 'test'.*\['train'\]"):
        SlakhDataset(tmp_path, split="test")
    (tmp_path / "train" / "Track00001").mkdir()
    (tmp_path / "train" / "Track00001" / "notes.txt").write_text("hello")
    with pytest.raises(UserInputError, match="No tracks"):
        SlakhDataset(tmp_path)
    with pytest.raises(UserInputError, match="layout must be"):
        SlakhDataset(tmp_path, layout="weird")
    (tmp_path / "train" / "Track00001" / "bass.flac").write_text("this is not audio")
    with pytest.raises(UserInputError, match=r"bass\.flac is not a readable audio file"):
        SlakhDataset(tmp_path)
    (tmp_path / "train" / "Track00001" / "bass.flac").unlink()
    _write(tmp_path / "train" / "Track00001" / "bass.wav", np.zeros(0, np.float32), 22050)
    with pytest.raises(UserInputError, match="zero length"):
        SlakhDataset(tmp_path)
    nan = _noise(0, 3000)
    nan[1500] = np.nan
    _write(tmp_path / "train" / "Track00001" / "bass.wav", nan, 22050)
    ds = SlakhDataset(tmp_path, chunk_samples=1000, mode="sequential")
    with pytest.raises(UserInputError, match="NaN"):
        ds[1]
    with pytest.raises(UserInputError, match="less than one chunk"):
        SlakhDataset(tmp_path, chunk_samples=5000)


def _musdb_track(folder: Path, seed: int, n: int = 8000, sr: int = 44100) -> dict[str, np.ndarray]:
    audio = {s: _noise(seed + k, n, 0.1, channels=2) for k, s in enumerate(("vocals", "drums", "bass", "other"))}
    for stem, x in audio.items():
        _write(folder / f"{stem}.wav", x, sr)
    _write(folder / "mixture.wav", sum(audio.values()), sr)
    return audio


def test_musdb_hq_wav_folders_mono_mixture_and_chunks(tmp_path: Path) -> None:
    a = _musdb_track(tmp_path / "test" / "Artist A - Song", 0)
    _musdb_track(tmp_path / "test" / "Artist B - Other Song", 10, n=6000)
    ds = MusdbDataset(tmp_path, subset="test", sample_rate=44100, chunk_samples=2000, return_mixture=True)
    assert ds.track_names == ["Artist A - Song", "Artist B - Other Song"]
    assert len(ds) == 4 + 3
    stems, mix = ds[1]
    assert stems.shape == (4, 2000) and mix.shape == (1, 2000)
    vocals = torch.from_numpy(a["vocals"][2000:4000].mean(axis=1))
    torch.testing.assert_close(stems[0], vocals)
    torch.testing.assert_close(mix[0], stems.sum(0), atol=1e-5, rtol=0)  # the provided mixture is the sum here
    low = MusdbDataset(tmp_path, sample_rate=22050, chunk_samples=1000, mode="random", seed=1)
    assert low.tracks[0].length == 4000 and low[0].shape == (4, 1000)
    with pytest.raises(UserInputError, match="mono"):
        MusdbDataset(tmp_path, mono=False)


def test_musdb_bad_inputs_and_missing_musdb_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserInputError, match="MUSDB root"):
        MusdbDataset(tmp_path / "absent")
    (tmp_path / "train").mkdir()
    with pytest.raises(UserInputError, match="No MUSDB tracks"):
        MusdbDataset(tmp_path, subset="train")
    (tmp_path / "train" / "Artist - Song.stem.mp4").write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "musdb", None)  # makes `import musdb` fail even where it is installed
    with pytest.raises(UserInputError, match="pip install musdb"):
        MusdbDataset(tmp_path, subset="train")
