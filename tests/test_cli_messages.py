"""Messages and start-up: `train` errors are one sentence (typed recipe values, binary recipes) and leave nothing
behind; `--help` shows defaults without loading torch; the thread count is chosen from the CPUs this process may use
(affinity, cgroup quota) before torch loads, and fewer threads are used while other processes are busy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgdm_audio.cli import main
from mgdm_audio.core import threads

ROOT = Path(__file__).resolve().parents[1]

RECIPE = """\
name: tiny-cli
model:
  factory: mgdm_audio.audio.model:build_prior
  kwargs: {{config: tiny}}
data:
  factory: mgdm_audio.audio.data.readers:SlakhDataset
  kwargs: {{root: {root}, split: train, stems: [bass, drums, guitar, piano], sample_rate: 22050, chunk_samples: 128}}
training:
  batch_size: 2
  lr: {lr}
  max_steps: 3
  checkpoint_every: 0
  validate_every: 0
"""


def _train(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["train", *argv, "--no-progress"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("lr", "message"),
    [('"fast"', "recipe value training.lr must be float, got 'fast' (str)."), ("true", "got True (bool)")],
)
def test_a_wrongly_typed_recipe_value_is_one_sentence(tmp_path, capsys, lr, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(root=tmp_path / "data", lr=lr))
    code, err = _train([str(recipe), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_binary_recipe_file_is_one_sentence(tmp_path, capsys):
    recipe = tmp_path / "model.yaml"
    recipe.write_bytes(bytes(range(256)) * 4)
    code, err = _train([str(recipe), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and f"recipe {recipe} is not a text file" in err and err.count("\n") == 1
    recipe.write_bytes(b"name: x\x00\x01\n")  # valid UTF-8, but not YAML
    code, err = _train([str(recipe), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "is not valid YAML" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_unknown_factory_arguments_are_one_sentence(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(root=tmp_path / "data", lr=1e-3).replace("{config: tiny}", "{confg: tiny}"))
    code, err = _train([str(recipe), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "mgdm_audio.audio.model:build_prior" in err and "confg" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(root=tmp_path / "no-data", lr=1e-3))  # the data folder does not exist
    code, err = _train([str(recipe), "--out", str(tmp_path / "runs" / "a")], capsys)
    assert code == 2 and err.startswith("mgdm-audio: error: ") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # neither the run folder nor its parent
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    assert _train([str(recipe), "--out", str(tmp_path / "kept")], capsys)[0] == 2
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]  # what was there stays


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["separate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("slakh-style-small", "0.25", "4", "1", "{track}/{stem}.{ext}", "separated", "auto", "mgdm"):
        assert f"(default: {default})" in text, default


def test_help_loads_no_torch():
    code = "import sys; from mgdm_audio.cli import build_parser; build_parser().format_help(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'scipy')))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    out = subprocess.run([sys.executable, "-m", "mgdm_audio", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "separate" in out.stdout


def test_every_command_and_engine_help_formats(capsys):
    """`--help` of every subcommand and benchmark engine prints (a stray `%` in a help string breaks argparse)."""
    from mgdm_audio.benchmarks import ENGINES
    from mgdm_audio.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = [[name] for name in sub.choices if name != "benchmark"]
    commands += [["benchmark", engine] for engine in ENGINES]
    assert len(commands) >= 8
    for argv in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--help"])
        assert exit_info.value.code == 0, argv
        assert capsys.readouterr().out.startswith("usage:"), argv


# ------------------------------------------------------------------------------------------ threads


def test_cgroup_quota_v2_and_v1(tmp_path):
    assert threads.cgroup_cpu_quota(tmp_path) is None  # no files: unlimited
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(v1) is None
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("50000\n")
    assert threads.cgroup_cpu_quota(v1) == 0.5
    assert threads.available_cpus(v1) == 1  # half a CPU: one thread
    assert threads.available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))


def test_threads_for_load():
    assert [threads.threads_for_load(2, b) for b in (0.0, 0.2, 0.3, 1.0, 1.3, 3.0)] == [2, 2, 1, 1, 1, 1]
    assert [threads.threads_for_load(8, b) for b in (0.0, 1.0, 2.5)] == [8, 7, 5]


def test_configure_before_torch_loads_respects_the_user():
    code = (
        "import os, sys; from mgdm_audio.core import threads; n = threads.configure(int(sys.argv[1]));"
        "import torch; print(n, torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], threads._state.adaptive)"
    )
    cpus = threads.available_cpus()

    def run(arg: int, **env: str) -> list[str]:
        base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        out = subprocess.run(
            [sys.executable, "-c", code, str(arg)], cwd=ROOT, env={**base, **env}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert run(0) == [str(cpus), str(cpus), str(cpus), "True"]  # automatic: adapts to the load
    assert run(0, OMP_NUM_THREADS="1") == ["1", "1", "1", "False"]  # the user's setting, fixed
    assert run(1, OMP_NUM_THREADS="3") == ["1", "1", "1", "False"]  # --threads wins over the environment


def test_adapt_takes_a_thread_away_while_others_are_busy(monkeypatch):
    readings = iter([(100.0, 10.0), (101.9, 11.0), (103.0, 12.0), (104.9, 13.9)])  # (busy CPU s, own CPU s)
    current: dict[str, float] = {}

    def busy() -> float:
        current["busy"], current["own"] = next(readings)
        return current["busy"]

    monkeypatch.setattr(threads, "_busy_seconds", busy)
    monkeypatch.setattr(threads.time, "process_time", lambda: current["own"])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "_state", threads._State(cpus=2, threads=2, adaptive=True))
    try:
        assert threads.adapt(now=0.0) == 2  # the first reading only starts the interval
        assert threads.adapt(now=0.5) == 2  # too soon: nothing read
        assert threads.adapt(now=1.0) == 1 and torch.get_num_threads() == 1  # others used 0.9 of a core
        assert threads.adapt(now=2.0) == 2 and torch.get_num_threads() == 2  # others used 0.1
        torch.set_num_threads(1)  # someone else sets the count: adapting stops
        assert threads.adapt(now=3.0) == 2 and not threads._state.adaptive and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_checkpoints_and_weights_get_the_usual_mode(tmp_path):
    from mgdm_audio.training.checkpoint import save_checkpoint
    from mgdm_audio.training.export import save_weights

    umask = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "checkpoint.pt", {"step": 1})
        save_weights(tmp_path / "model.safetensors", {"w": torch.zeros(2)})
    finally:
        os.umask(umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "model.safetensors"]  # no temporaries
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in tmp_path.iterdir())
