"""Slakh-style renderer: layout, lengths, mix = sum of stems, stem bands, determinism, disjointness, bad input.

Renders a few 4-s tracks with tinysoundfont and FluidR3_GM (apt ``fluid-soundfont-gm``). TimGM6mb (inside
pretty_midi) is reserved for independent evaluation: datasets refuse it (tested here), nothing is rendered with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("tinysoundfont")

from mgdm_audio.audio.data import synth  # noqa: E402
from mgdm_audio.audio.data.render import SplitSpec, check_disjoint, load_recipe, render_split  # noqa: E402
from mgdm_audio.cli import main  # noqa: E402
from mgdm_audio.core.atomic import file_sha256  # noqa: E402
from mgdm_audio.core.errors import UserInputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECONDS, RATE = 4.0, 22050
STEMS = ("bass", "drums", "guitar", "piano")
FLUIDR3 = synth.FLUID_R3_GM
pytestmark = pytest.mark.skipif(not FLUIDR3.is_file(), reason="FluidR3_GM.sf2 (apt fluid-soundfont-gm) is missing")


def pip_only_spec(name: str = "train", tracks: int = 2, seed: int = 7) -> SplitSpec:
    return SplitSpec(
        name=name, tracks=tracks, seconds=SECONDS, seed=seed, soundfont=str(FLUIDR3), renderer="tinysoundfont"
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slakh")
    render_split(root, pip_only_spec(), sample_rate=RATE, progress=False)
    return root


def read(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="float64")
    assert rate == RATE
    return audio


def test_layout_lengths_and_sample_rate(rendered):
    tracks = sorted(p.name for p in (rendered / "train").iterdir())
    assert tracks == ["Track00000", "Track00001"]
    for track in tracks:
        folder = rendered / "train" / track
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [f"{s}.flac" for s in STEMS] + ["mix.flac", "metadata.json"]
        )
        for name in [*STEMS, "mix"]:
            info = soundfile.info(folder / f"{name}.flac")
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (RATE, 1, SECONDS * RATE, "PCM_16")
        meta = __import__("json").loads((folder / "metadata.json").read_text())
        assert meta["renderer"] == "tinysoundfont" and meta["sample_rate"] == RATE
        assert meta["soundfont"]["sha256"] == file_sha256(FLUIDR3)
        assert set(meta["programs"]) == set(STEMS) and 32 <= meta["programs"]["bass"] <= 39


def test_mix_is_sum_of_written_stems_and_peak_limited(rendered):
    for folder in sorted((rendered / "train").iterdir()):
        stems = [read(folder / f"{s}.flac") for s in STEMS]
        mix = read(folder / "mix.flac")
        assert np.abs(mix - np.sum(stems, axis=0)).max() < 1e-4
        assert np.abs(mix).max() <= 0.9 + 1e-3
        assert all(np.sqrt(np.mean(s**2)) > 1e-3 for s in stems)  # no silent stem


def band_fraction_below(x: np.ndarray, hz: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / RATE)
    return float(power[freqs < hz].sum() / power.sum())


def frames(x: np.ndarray, size: int = 1024, hop: int = 512) -> np.ndarray:
    idx = np.arange(0, x.size - size, hop)[:, None] + np.arange(size)[None, :]
    return np.abs(np.fft.rfft(x[idx] * np.hanning(size), axis=1)) + 1e-10


def test_stem_energy_sits_in_its_band(rendered):
    for folder in sorted((rendered / "train").iterdir()):
        audio = {s: read(folder / f"{s}.flac") for s in STEMS}
        assert band_fraction_below(audio["bass"], 300.0) > 0.6
        assert band_fraction_below(audio["piano"], 300.0) < band_fraction_below(audio["bass"], 300.0)
        spectra = {s: frames(a) for s, a in audio.items()}
        flatness = {s: float(np.median(np.exp(np.log(m).mean(1)) / m.mean(1))) for s, m in spectra.items()}
        assert flatness["drums"] > 3 * max(flatness["bass"], flatness["guitar"], flatness["piano"])
        flux = np.maximum(np.diff(np.log(spectra["drums"]), axis=0), 0).sum(1)
        peaks = (flux[1:-1] > flux[:-2]) & (flux[1:-1] >= flux[2:]) & (flux[1:-1] > np.median(flux) + 2 * flux.std())
        assert peaks.sum() >= 4  # >= 1 drum onset per second at 80-150 bpm on an eighth-note grid


def test_same_seed_same_bytes_and_other_seed_differs(rendered, tmp_path):
    render_split(tmp_path, pip_only_spec(tracks=1), sample_rate=RATE, progress=False)
    render_split(tmp_path, pip_only_spec(name="other", tracks=1, seed=8), sample_rate=RATE, progress=False)
    for name in [*STEMS, "mix"]:
        first = (rendered / "train/Track00000" / f"{name}.flac").read_bytes()
        assert (tmp_path / "train/Track00000" / f"{name}.flac").read_bytes() == first
        assert (tmp_path / "other/Track00000" / f"{name}.flac").read_bytes() != first


def test_rerun_renders_only_missing_tracks_and_cleans_partial_files(tmp_path):
    spec = pip_only_spec(tracks=2)
    render_split(tmp_path, spec, sample_rate=RATE, progress=False)
    interrupted = tmp_path / "train/Track00001"
    (interrupted / "metadata.json").unlink()
    (interrupted / ".mix.flac.abc.partial").write_bytes(b"truncated")
    kept = (tmp_path / "train/Track00000/mix.flac").stat().st_mtime_ns
    summary = render_split(tmp_path, spec, sample_rate=RATE, progress=False)
    assert (summary.rendered, summary.skipped) == (1, 1)
    assert (interrupted / "metadata.json").is_file() and not list(interrupted.glob(".*"))
    assert (tmp_path / "train/Track00000/mix.flac").stat().st_mtime_ns == kept


def test_recipe_test_splits_share_no_content_key_with_train():
    recipe = load_recipe(REPO / "recipes/data/slakh-style.yaml")
    names = [s.name for s in recipe.splits]
    assert names == ["train", "validation", "test", "test_chorales"]
    train = recipe.splits[0]
    assert train.tracks * train.seconds >= 2 * 3600
    if __import__("importlib").util.find_spec("music21") is None:
        recipe.splits = recipe.splits[:3]
    counts = check_disjoint(recipe)
    assert counts["train"] > 50 and counts["test"] > 5
    overlapping = SplitSpec(name="test", tracks=20, seed=10**6, progressions=["maj0"])
    recipe.splits = [train, overlapping]
    with pytest.raises(UserInputError, match="shares"):
        check_disjoint(recipe)


def test_bad_inputs_give_one_clear_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(UserInputError, match="does not exist"):
        render_split(tmp_path, SplitSpec(name="train", soundfont=str(tmp_path / "missing.sf2")), progress=False)
    with pytest.raises(UserInputError, match="choose one of procedural, chorales, corpus, mixed"):
        render_split(tmp_path, SplitSpec(name="train", source="midi"), progress=False)
    monkeypatch.setattr(synth, "renderer_available", lambda name: False)
    with pytest.raises(UserInputError, match="apt-get install -y libfluidsynth3"):
        synth.resolve_renderer("auto")
    assert main(["make-dataset", "-o", str(tmp_path), "--soundfont", str(tmp_path / "none.sf2")]) == 2
    assert main(["make-dataset", "-o", str(tmp_path), "--source", "midi"]) == 2
    assert "error:" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.flac"))


def test_reserved_soundfonts_are_refused_and_there_is_no_fallback(tmp_path, monkeypatch):
    timgm = synth.bundled_timgm6mb()
    if timgm is not None:
        with pytest.raises(UserInputError, match="reserved"):
            render_split(tmp_path, SplitSpec(name="train", tracks=1, seconds=1.0, soundfont=str(timgm)), progress=False)
    csound = tmp_path / "sf_GMbank.sf2"
    csound.write_bytes(b"RIFF")
    alias = tmp_path / "any-name.sf2"
    alias.symlink_to(csound)
    for path in (csound, alias):
        with pytest.raises(UserInputError, match="reserved"):
            synth.resolve_soundfont(path)
    assert synth.resolve_soundfont(csound, allow_reserved=True) == csound.resolve()
    monkeypatch.setattr(synth, "FLUID_R3_GM", tmp_path / "absent.sf2")
    with pytest.raises(UserInputError, match="apt-get install -y fluid-soundfont-gm"):
        synth.resolve_soundfont(None)
    assert not any(tmp_path.rglob("*.flac"))


def test_chorale_track_renders_with_four_stems(tmp_path):
    pytest.importorskip("music21")
    from mgdm_audio.audio.data.chorales import chorale_pieces, title_is_held_out

    held_out = chorale_pieces("held_out")
    assert held_out and all(title_is_held_out(p.title) for p in held_out)
    assert not {p.title for p in held_out} & {p.title for p in chorale_pieces("train")}
    spec = SplitSpec(
        name="test_chorales",
        source="chorales",
        tracks=1,
        seconds=SECONDS,
        seed=3,
        chorale_titles="held_out",
        soundfont=str(FLUIDR3),
        renderer="tinysoundfont",
    )
    render_split(tmp_path, spec, sample_rate=RATE, progress=False)
    folder = tmp_path / "test_chorales/Track00000"
    stems = [read(folder / f"{s}.flac") for s in STEMS]
    assert all(s.size == SECONDS * RATE and np.abs(s).max() > 0 for s in stems)
    assert np.abs(read(folder / "mix.flac") - np.sum(stems, axis=0)).max() < 1e-4
