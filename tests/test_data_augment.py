"""Training reader for a growing split and its Demucs-style augmentation: determinism, mix = sum of stems, absent
stems, remixing, the effects' closed forms, and tracks appearing while the render runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

soundfile = pytest.importorskip("soundfile")

from mgdm_audio.audio.data.augment import (  # noqa: E402
    AugmentConfig,
    augment_stems,
    compress,
    peaking_sos,
    reverb,
    saturate,
)
from mgdm_audio.audio.data.growing import GrowingSplitDataset  # noqa: E402
from mgdm_audio.core.errors import UserInputError  # noqa: E402

RATE = 8000
STEMS = ("bass", "drums", "guitar", "piano")
OFF = {"remix": 0.0, "eq": 0.0, "saturation": 0.0, "compression": 0.0, "reverb": 0.0, "absent": 0.0, "gain_db": [0, 0]}


def write_track(folder: Path, seed: int, seconds: float = 2.0, complete: bool = True) -> None:
    """A track like the renderer's: int16 stems, their integer sum as the mix, metadata.json last."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n)
    stems = {s: np.round(rng.uniform(-3000, 3000) * np.sin(t * rng.uniform(0.01, 0.3))).astype(np.int16) for s in STEMS}
    for name, x in stems.items():
        soundfile.write(folder / f"{name}.flac", x, RATE, subtype="PCM_16")
    mix = np.sum([x.astype(np.int32) for x in stems.values()], axis=0).astype(np.int16)
    soundfile.write(folder / "mix.flac", mix, RATE, subtype="PCM_16")
    if complete:
        (folder / "metadata.json").write_text(json.dumps({"sample_rate": RATE, "samples": n}))


@pytest.fixture()
def split(tmp_path) -> Path:
    for i, seconds in enumerate((2.0, 1.5, 3.0)):
        write_track(tmp_path / "train" / f"Track{i:05d}", i, seconds)
    return tmp_path


def make(root: Path, **kwargs) -> GrowingSplitDataset:
    args = {"sample_rate": RATE, "chunk_samples": 4000, "items_per_epoch": 16, "seed": 3, **kwargs}
    return GrowingSplitDataset(str(root), "train", **args)


def test_items_are_seeded_and_change_with_the_epoch(split):
    first, second = make(split), make(split)
    for i in range(6):
        np.testing.assert_array_equal(first[i].numpy(), second[i].numpy())
    second.set_epoch(1)
    assert not np.allclose(first[0].numpy(), second[0].numpy())
    assert not np.allclose(make(split, seed=4)[0].numpy(), first[0].numpy())


def test_without_augmentation_items_are_file_crops_and_sum_to_the_written_mix(split):
    ds = make(split, augment=OFF)
    for i in range(len(ds)):
        item = ds[i].numpy().astype(np.float64)
        crops = ds.crops(i)
        assert len(set(crops)) == 1
        track, start = crops[0]
        mix, _ = soundfile.read(ds.tracks[track] / "mix.flac", start=start, stop=start + 4000)
        expected = np.zeros(4000)
        expected[: mix.size] = mix
        np.testing.assert_allclose(item.sum(axis=0), expected, atol=1e-6)  # mix = sum of stems


def test_gains_scale_each_stem_and_remixing_draws_stems_from_other_crops(split):
    plain = make(split, augment=OFF)
    gained = make(split, augment={**OFF, "gain_db": [-12, 6]})
    for i in range(4):
        a, b = plain[i].numpy().astype(np.float64), gained[i].numpy().astype(np.float64)
        for k in range(4):
            ratio = b[k][np.abs(a[k]) > 1e-3] / a[k][np.abs(a[k]) > 1e-3]
            assert np.ptp(ratio) < 1e-4 and 10 ** (-12 / 20) - 1e-4 <= ratio[0] <= 10 ** (6 / 20) + 1e-4
    remixed = make(split, augment={**OFF, "remix": 1.0})
    assert sum(len(set(remixed.crops(i))) > 1 for i in range(16)) >= 12


def test_absent_stems_are_exactly_silent_and_never_all(split):
    ds = make(split, augment={**OFF, "absent": 1.0})
    for i in range(8):
        energy = (ds[i].numpy() ** 2).sum(axis=1)
        assert (energy == 0).sum() == 3 and energy[0] > 0
    ds = make(split, augment={**OFF, "absent": 0.4}, items_per_epoch=64)
    silent = [int(((ds[i].numpy() ** 2).sum(axis=1) == 0).sum()) for i in range(64)]
    assert 0.25 < np.mean(silent) / 4 < 0.55 and max(silent) <= 3


def test_full_augmentation_is_finite_and_float32(split):
    ds = make(split, augment={"remix": 0.5, "eq": 1, "saturation": 1, "compression": 1, "reverb": 1, "absent": 0})
    for i in range(4):
        x = ds[i]
        assert x.dtype.is_floating_point and x.shape == (4, 4000) and bool(x.isfinite().all())


def test_effects_reduce_to_identity_and_match_their_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(RATE)
    np.testing.assert_allclose(compress(x, RATE, threshold=100.0, ratio=4.0), x)
    loud = compress(x, RATE, threshold=0.1, ratio=4.0)
    assert np.sqrt(np.mean(loud**2)) < 0.5 * np.sqrt(np.mean(x**2))
    y = saturate(x, 2.0)
    assert np.abs(y).max() == pytest.approx(np.abs(x).max()) and np.all(np.diff(y[np.argsort(x)]) >= 0)
    np.testing.assert_allclose(reverb(x, RATE, rng, 0.5, 0.0), x)
    np.testing.assert_allclose(signal.sosfilt(peaking_sos(1000.0, 0.0, 1.0, RATE), x), x, atol=1e-12)
    w, h = signal.sosfreqz(peaking_sos(1000.0, 6.0, 1.0, RATE), worN=[1000.0], fs=RATE)
    assert 20 * np.log10(abs(h[0])) == pytest.approx(6.0, abs=1e-6)
    stems = rng.standard_normal((4, 2000)).astype(np.float32)
    a = augment_stems(stems, RATE, np.random.default_rng(5), AugmentConfig())
    np.testing.assert_array_equal(a, augment_stems(stems, RATE, np.random.default_rng(5), AugmentConfig()))


def test_split_grows_between_epochs_and_incomplete_tracks_are_ignored(split):
    ds = make(split)
    assert len(ds.tracks) == 3 and len(ds) == 16
    write_track(split / "train" / "Track00003", 9, complete=False)
    write_track(split / "train" / "Track00004", 10)
    ds.set_epoch(1)
    assert [t.name for t in ds.tracks] == ["Track00000", "Track00001", "Track00002", "Track00004"]
    assert ds.tracks_seen == {0: 3, 1: 4} and len(ds) == 16
    with pytest.raises(UserInputError, match="min_tracks=9"):
        make(split, min_tracks=9)
    with pytest.raises(UserInputError, match="known keys"):
        make(split, augment={"pitch": 1})
