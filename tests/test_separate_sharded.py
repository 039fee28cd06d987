"""`separate` sharded over processes (torchrun on CPU with gloo): the tracks are dealt to the ranks, each rank
writes its own tracks' stems (the same as one process writes), rank 0 writes the job record after the barrier, and a
run cut short resumes with --skip-existing (finished tracks skipped, a track without its run.json redone). Also
`--bf16` (autocast of the network only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mgdm_audio.audio.model import build_prior
from mgdm_audio.audio.separate_files import JOB_RECORD, OutputOptions, deal_tracks, separate_files
from mgdm_audio.audio.separator import Separator
from mgdm_audio.cli import main
from mgdm_audio.training.export import export_model

SR = 8000
STEMS = ["bass", "drums", "guitar", "piano"]


def _export_tiny_prior(folder: Path) -> Path:
    torch.manual_seed(0)
    module = build_prior("tiny")
    with torch.no_grad():  # random output weights: the untrained network's output is not identically 0
        for p in module.parameters():
            p.add_(0.01 * torch.randn(p.shape))
    meta = {"stems": STEMS, "sample_rate": SR, "chunk_samples": 4096}
    config = {"name": "tiny-audio", "model": {"architecture": module.export_config()}, "metadata": meta}
    export_model(folder, module.state_dict(), config, "# tiny test prior\n")
    return folder


def _inputs(tmp_path: Path) -> list[Path]:
    g = np.random.default_rng(0)
    files = []
    for name, seconds in (("a", 0.9), ("b", 0.6), ("c", 0.5)):
        path = tmp_path / "in" / f"{name}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, 0.1 * g.standard_normal(int(seconds * SR)), SR, subtype="FLOAT")
        files.append(path)
    return files


def _stems(folder: Path) -> np.ndarray:
    return np.stack([sf.read(folder / f"{s}.wav")[0] for s in STEMS])


ARGS = ["--sampler", "msdm", "--preset", "fast", "--no-progress", "--batch-chunks", "2", "-d", "cpu"]


def test_deal_puts_the_longest_first_on_the_least_loaded_rank() -> None:
    assert deal_tracks([1.0, 5.0, 2.0, 2.5, 0.0], 2) == [1, 0, 1, 1, 0]  # loads 5.0 and 5.5
    assert deal_tracks([3.0, 1.0], 1) == [0, 0]


def test_ranks_write_their_own_tracks_rank0_records_the_job_and_a_cut_run_resumes(tmp_path) -> None:
    prior, files = _export_tiny_prior(tmp_path / "prior"), _inputs(tmp_path)
    single = tmp_path / "single"
    assert main(["separate", *map(str, files), "-n", str(prior), "-o", str(single), *ARGS]) == 0
    separator = Separator(str(prior), "msdm", "fast", "cpu", batch_chunks=2)
    out, job_path = tmp_path / "sharded", tmp_path / "sharded" / "tiny-audio" / JOB_RECORD
    # the two ranks one after the other (what the barrier orders): rank 1 takes b and c, rank 0 a (the longest)
    ones = separate_files(files, out, separator, OutputOptions(), rank=1, world=2)
    assert [Path(s["input"]).name for s in ones] == ["b.wav", "c.wav"] and not job_path.exists()
    zeros = separate_files(files, out, separator, OutputOptions(force=True), rank=0, world=2)  # b, c exist now
    assert [Path(s["input"]).name for s in zeros] == ["a.wav"]
    for f in files:
        assert np.array_equal(_stems(out / "tiny-audio" / f.stem), _stems(single / "tiny-audio" / f.stem))
    job = json.loads(job_path.read_text())
    assert (job["world_size"], job["separated"], job["skipped"]) == (2, 3, 0)
    assert [t["rank"] for t in job["tracks"]] == [0, 1, 1] and job["audio_seconds"] == 2.0
    assert job["nfe"] == sum(t["run"]["nfe"] for t in job["tracks"]) == 600  # 6 segments of msdm audio-fast
    # a run cut short: b's stems written but not its run.json; resuming redoes b only, finished tracks are skipped
    (out / "tiny-audio" / "b" / "run.json").unlink()
    b_stems = out / "tiny-audio" / "b" / "bass.wav"
    b_stems.write_bytes(b"")  # a stem the cut run left unusable is rewritten
    resume = OutputOptions(skip_existing=True)
    assert separate_files(files, out, separator, resume, rank=1, world=2) == []  # b is the only work: rank 0's
    again = separate_files(files, out, separator, resume, rank=0, world=2)
    assert [(Path(s["input"]).name, s.get("skipped", False)) for s in again] == [
        ("a.wav", True),
        ("b.wav", False),
        ("c.wav", True),
    ]
    assert np.array_equal(_stems(out / "tiny-audio" / "b"), _stems(single / "tiny-audio" / "b"))
    job = json.loads(job_path.read_text())
    assert (job["separated"], job["skipped"], job["tracks"][1]["rank"]) == (1, 2, 0)


def test_torchrun_two_processes_match_one_process(tmp_path) -> None:
    prior, files = _export_tiny_prior(tmp_path / "prior"), _inputs(tmp_path)[:2]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main(["separate", *map(str, files), "-n", str(prior), "-o", str(single), *ARGS]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    args = ["mgdm_audio", "separate", *map(str, files), "-n", str(prior), "-o", str(sharded), *ARGS]
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    job = json.loads((sharded / "tiny-audio" / JOB_RECORD).read_text())
    assert job["world_size"] == 2 and [t["rank"] for t in job["tracks"]] == [0, 1]
    for f in files:
        assert np.array_equal(_stems(sharded / "tiny-audio" / f.stem), _stems(single / "tiny-audio" / f.stem))
    # bf16 autocast of the network: recorded, and it changes the numbers (a little)
    bf16 = tmp_path / "bf16"
    assert main(["separate", str(files[1]), "-n", str(prior), "-o", str(bf16), *ARGS, "--bf16"]) == 0
    assert json.loads((bf16 / "tiny-audio" / "b" / "run.json").read_text())["bf16"] is True
    x, y = _stems(bf16 / "tiny-audio" / "b"), _stems(single / "tiny-audio" / "b")
    assert np.isfinite(x).all() and not np.array_equal(x, y) and np.abs(x - y).max() < 0.5 * np.abs(y).max()
