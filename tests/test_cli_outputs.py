"""Nothing overwritten silently, nothing left behind: colliding input names, --filename templates, the overwrite rule
of `generate`, leftovers of killed runs, SIGTERM during a separation, recursive folder input, --segment's bound."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mgdm_audio.cli import main
from mgdm_audio.core.atomic import remove_stale_parts, temp_sibling
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.outputs import check_template, distinct_track_names
from tests.audio_priors_for_tests import band_stems
from tests.test_separator import band_prior_cli, prior  # noqa: F401  (the toy prior behind `-n band-toy`)

SR = 8000
ROOT = Path(__file__).resolve().parents[1]


def _mix(path: Path, seconds: float = 0.3, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = band_stems(int(seconds * SR), SR, seed=seed).sum(0).numpy()
    sf.write(path, x, SR, subtype="PCM_16")
    return sf.read(path)[0]


def _separate(inputs: list[Path], out: Path, *extra: str) -> int:
    args = ["separate", *map(str, inputs), "-n", "band-toy", "-o", str(out), "--sampler", "msdm", "--preset", "fast"]
    return main([*args, "--no-progress", *extra])


def _stem_sum(folder: Path) -> np.ndarray:
    return np.stack([sf.read(folder / f"{s}.wav")[0] for s in ("bass", "drums", "guitar", "piano")]).sum(0)


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _empty_folders(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_dir() and not any(p.iterdir())]


# ------------------------------------------------------------------------------------------ naming rule


def test_distinct_track_names_rule(tmp_path):
    a, b = tmp_path / "a" / "song.wav", tmp_path / "b" / "song.wav"
    flac, other = tmp_path / "a" / "song.flac", tmp_path / "other.wav"
    assert distinct_track_names([a, other]) == ["song", "other"]  # no collision: names unchanged
    assert distinct_track_names([a, b, other]) == ["a_song", "b_song", "other"]  # parent folders
    assert distinct_track_names([a, flac]) == ["song_wav", "song_flac"]  # same folder: the extension
    assert distinct_track_names([a, flac, b]) == ["a_song_wav", "a_song_flac", "b_song_wav"]  # both
    assert distinct_track_names([b, a]) == ["b_song", "a_song"]  # the name does not depend on the order
    with pytest.raises(UserInputError, match="given twice"):
        distinct_track_names([a, tmp_path / "a" / ".." / "a" / "song.wav"])


@pytest.mark.parametrize(
    ("template", "message"),
    [("{track}/{name}.{ext}", "unknown fields"), ("{track}.{ext}", "must contain {stem}"), ("/x/{stem}", "relative"),
     ("../{track}/{stem}.{ext}", "relative"), ("{track/{stem}", "not a valid template")],
)  # fmt: skip
def test_bad_templates_are_refused(template, message):
    with pytest.raises(UserInputError, match=message):
        check_template(template)


@pytest.mark.usefixtures("band_prior_cli")
def test_colliding_names_get_distinct_track_folders(tmp_path):
    a = _mix(tmp_path / "a" / "song.wav", seed=1)
    b = _mix(tmp_path / "b" / "song.wav", seed=2)
    c = _mix(tmp_path / "b" / "song.flac", seed=3)
    sf.write(tmp_path / "b" / "song.flac", c, SR, format="FLAC")
    out = tmp_path / "out"
    assert _separate([tmp_path / "a" / "song.wav", tmp_path / "b" / "song.wav"], out) == 0
    for name, mix in (("a_song", a), ("b_song", b)):  # each folder holds its own input's stems
        assert np.abs(_stem_sum(out / "band-toy" / name) - mix).max() < 2e-3
    out2 = tmp_path / "out2"
    assert _separate([tmp_path / "b" / "song.wav", tmp_path / "b" / "song.flac"], out2) == 0
    assert np.abs(_stem_sum(out2 / "band-toy" / "song_wav") - b).max() < 2e-3
    assert np.abs(_stem_sum(out2 / "band-toy" / "song_flac") - c).max() < 2e-3


@pytest.mark.usefixtures("band_prior_cli")
def test_a_template_that_merges_two_inputs_is_refused_before_any_work(tmp_path, capsys):
    _mix(tmp_path / "a" / "song.wav")
    _mix(tmp_path / "b" / "other.wav")
    inputs, out = [tmp_path / "a" / "song.wav", tmp_path / "b" / "other.wav"], tmp_path / "out"
    assert _separate(inputs, out, "--filename", "{stem}.{ext}") == 2
    err = capsys.readouterr().err
    assert "would both be written to" in err and "song.wav" in err and "other.wav" in err
    assert not out.exists()
    assert _separate(inputs, out, "--filename", "{track}_{trackext}-{stem}.{ext}") == 0
    files = _all_files(out / "band-toy")
    assert "song_wav-bass.wav" in files and "other_wav-piano.wav" in files and "song_wav-run.json" in files


@pytest.mark.usefixtures("band_prior_cli")
def test_recursive_folder_input(tmp_path, capsys):
    _mix(tmp_path / "music" / "album1" / "01.wav", seed=1)
    _mix(tmp_path / "music" / "album2" / "01.wav", seed=2)
    out = tmp_path / "out"
    assert _separate([tmp_path / "music"], out) == 2
    assert "--recursive" in capsys.readouterr().err
    assert _separate([tmp_path / "music"], out, "--recursive") == 0
    assert sorted(p.name for p in (out / "band-toy").iterdir()) == ["album1_01", "album2_01"]


@pytest.mark.usefixtures("band_prior_cli")
def test_segment_has_a_lower_bound(tmp_path, capsys):
    _mix(tmp_path / "song.wav")
    assert _separate([tmp_path / "song.wav"], tmp_path / "out", "--segment", "0.01") == 2
    err = capsys.readouterr().err
    assert "--segment must be at least 0.5 seconds" in err and "0.01" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ leftovers


@pytest.mark.usefixtures("band_prior_cli")
def test_stale_part_files_of_dead_processes_are_removed(tmp_path):
    track = tmp_path / "out" / "band-toy" / "song"
    track.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = track / f".bass.wav.{int(dead.stdout)}.k3j2h1.part"
    legacy = track / ".drums.wav.x7y8z9.part"  # named before process ids were added
    alive = track / f".piano.wav.{os.getppid()}.q1w2e3.part"  # a running process's file is left alone
    for p in (stale, legacy, alive):
        p.write_bytes(b"half")
    _mix(tmp_path / "song.wav")
    assert _separate([tmp_path / "song.wav"], tmp_path / "out") == 0
    assert not stale.exists() and not legacy.exists() and alive.exists()
    assert remove_stale_parts(track) == []  # our own temporary files are never taken for stale ones
    own = temp_sibling(track / "x.wav")
    assert remove_stale_parts(track) == [] and own.exists()


@pytest.mark.usefixtures("band_prior_cli")
def test_published_files_have_the_usual_mode(tmp_path):
    _mix(tmp_path / "song.wav")
    umask = os.umask(0o022)
    try:
        assert _separate([tmp_path / "song.wav"], tmp_path / "out", "--plot") == 0
    finally:
        os.umask(umask)
    track = tmp_path / "out" / "band-toy" / "song"
    for name in ("bass.wav", "run.json", "separation.png"):
        assert (track / name).stat().st_mode & 0o777 == 0o644, name


SIGTERM_CHILD = textwrap.dedent(
    """
    import sys
    import mgdm_audio.audio.separator as separator_module
    from tests.audio_priors_for_tests import BandPrior
    from mgdm_audio.cli import main

    prior = BandPrior(sample_rate=8000, chunk_samples=1024)
    separator_module.load_prior = lambda name, device: prior
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_separation_leaves_no_partial_files_and_no_empty_folders(tmp_path, signum):
    song = tmp_path / "song.wav"
    _mix(song, seconds=60.0)  # long enough to be stopped mid-track
    done = tmp_path / "done.wav"
    _mix(done)
    out = tmp_path / "out"
    (out / "band-toy" / "done").mkdir(parents=True)  # an earlier track's results stay
    (out / "band-toy" / "done" / "keep.txt").write_text("earlier result")
    cmd = [sys.executable, "-c", SIGTERM_CHILD, "separate", str(song), "-n", "band-toy", "-o", str(out)]
    cmd += ["--sampler", "pigdm", "--preset", "default", "--no-progress", "--threads", "1"]
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    track = out / "band-toy" / "song"
    deadline = time.monotonic() + 120
    while not list(track.glob(".*.part")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, child.communicate()
    assert list(track.glob(".*.part"))  # mid-track: the stems' temporary files exist
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert not track.exists()  # no partial files and no empty track folder
    assert _all_files(out) == ["band-toy/done/keep.txt"] and _empty_folders(out) == []


# ------------------------------------------------------------------------------------------ generate


def test_generate_refuses_existing_outputs_unless_force(tmp_path, capsys, monkeypatch):
    import mgdm_audio.audio.priors as priors_module
    from mgdm_audio.audio.model import build_prior

    module = build_prior("tiny", edm={"sigma_data": 0.1})  # untrained: only the files matter here
    stems = tuple(f"s{k}" for k in range(module.unet_config.stems))
    tiny = priors_module.AudioPrior(module, stems, SR, 1024, {}, "x", Path("tiny"))
    monkeypatch.setattr(priors_module, "load_prior", lambda name, device: tiny)
    out = tmp_path / "gen"
    args = ["generate", "-n", "tiny", "--seconds", "0.1", "--steps", "3", "-o", str(out)]
    (out / "sample_0").mkdir(parents=True)
    (out / "sample_0" / "mix.wav").write_bytes(b"keep")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "mix.wav already exists; use --force" in err
    assert _all_files(out) == ["sample_0/mix.wav"] and (out / "sample_0" / "mix.wav").read_bytes() == b"keep"
    assert main([*args, "--force"]) == 0
    assert _all_files(out) == sorted(f"sample_0/{n}.wav" for n in (*stems, "mix"))
    total = np.stack([sf.read(out / "sample_0" / f"{n}.wav")[0] for n in stems]).sum(0)
    assert np.allclose(total, sf.read(out / "sample_0" / "mix.wav")[0], atol=1e-6)
    assert main(args) == 2  # a second run into the same folder: refused again
