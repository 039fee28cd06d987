"""music21 corpus content: held-out works, the four-stem mapping, variation by seed, mixed splits, the recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("music21")

from mgdm_audio.audio.data.corpus import CorpusPiece, corpus_pieces, corpus_song, work_set  # noqa: E402
from mgdm_audio.audio.data.procedural import BASS_PROGRAMS, GUITAR_PROGRAMS, PIANO_PROGRAMS  # noqa: E402
from mgdm_audio.audio.data.render import SplitSpec, check_disjoint, load_recipe, track_source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_sets_hold_out_whole_works():
    sets = {which: corpus_pieces(which) for which in ("train", "validation", "test")}
    works = {which: {p.work for pieces in s.values() for p in pieces} for which, s in sets.items()}
    assert works["train"] and works["validation"] and works["test"]
    assert not works["train"] & works["validation"] and not works["train"] & works["test"]
    assert not works["validation"] & works["test"]
    everything = corpus_pieces("all")
    assert sum(map(len, everything.values())) == sum(len(v) for s in sets.values() for v in s.values())
    assert not any(p.path.endswith(".rntxt") or p.path.startswith("bach/") for v in everything.values() for p in v)
    movement = CorpusPiece("haydn/opus1no1/movement3.mxl", "quartets")
    assert movement.work == "haydn/opus1no1" and work_set(movement.work) == work_set("haydn/opus1no1")


@pytest.mark.parametrize("collection", ["folk", "palestrina"])
def test_a_piece_maps_to_four_stems_in_their_classes_and_varies_by_seed(collection):
    piece = corpus_pieces("all")[collection][0]
    songs = [corpus_song("all", seed, 12.0, piece=piece) for seed in (1, 2, 3)]
    for song in songs:
        assert 0 < song.seconds <= 12.0 and song.content_key == f"corpus:{piece.work}"
        assert all(stem.notes for stem in song.stems.values()), {k: len(v.notes) for k, v in song.stems.items()}
        assert all(28 <= n.pitch <= 55 for n in song.stems["bass"].notes)
        assert all(0 <= n.start < n.end <= song.seconds for s in song.stems.values() for n in s.notes)
        assert song.stems["bass"].program in BASS_PROGRAMS and song.stems["guitar"].program in GUITAR_PROGRAMS
        assert song.stems["piano"].program in PIANO_PROGRAMS and song.stems["drums"].is_drum
    again = corpus_song("all", 1, 12.0, piece=piece)
    assert [n for s in again.stems.values() for n in s.notes] == [n for s in songs[0].stems.values() for n in s.notes]
    tempos = {s.metadata["tempo_bpm"] for s in songs}
    transpositions = {s.metadata["transpose"] for s in songs}
    assert len(tempos) == 3 and len(transpositions) >= 2


def test_mixed_split_draws_sources_with_the_content_weights():
    spec = SplitSpec(name="t", source="mixed", tracks=400, content={"procedural": 3.0, "corpus": 1.0}, seed=5)
    spec.validate()
    sources = [track_source(spec, i) for i in range(spec.tracks)]
    assert set(sources) == {"procedural", "corpus"}
    assert abs(sources.count("procedural") / 400 - 0.75) < 0.07
    assert sources == [track_source(spec, i) for i in range(spec.tracks)]


def test_diverse_recipe_holds_out_timbre_and_content():
    recipe = load_recipe(REPO / "recipes/data/slakh-diverse.yaml")
    splits = {s.name: s for s in recipe.splits}
    train = splits["train"]
    assert train.tracks * train.seconds >= 20 * 3600
    train_sources = {name for names in train.timbres.values() for name in names}
    for name in ("validation_opl3", "test_opl3"):
        assert {n for names in splits[name].timbres.values() for n in names} == {"opl3"}
        assert "opl3" not in train_sources
    assert splits["validation_opl3"].corpus_set == "validation" and splits["test_opl3"].corpus_set == "test"
    assert splits["test_opl3"].chorale_titles == "held_out" and train.chorale_titles == "train"
    for name in ("validation", "test", "test_chorales"):  # the FluidR3 splits of slakh-style.yaml, unchanged
        old = {s.name: s for s in load_recipe(REPO / "recipes/data/slakh-style.yaml").splits}[name]
        new = splits[name]
        assert (new.source, new.tracks, new.seconds, new.seed, new.progressions) == (
            old.source, old.tracks, old.seconds, old.seed, old.progressions
        )  # fmt: skip
        assert Path(new.soundfont).name == "FluidR3_GM.sf2"
    counts = check_disjoint(recipe)
    assert counts["test_opl3"] > 100 and counts["train"] > 1000
    assert np.isfinite(sum(counts.values()))
