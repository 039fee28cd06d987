"""The provenance of the stand-alone evaluation scripts' results files (harness.script_provenance): the command that
regenerates them, the commit, the prior's weight hash and the machine, as a Markdown footer and JSON keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mgdm_audio.benchmarks.harness import cpu_model, provenance_markdown, script_provenance, with_provenance

ROOT = Path(__file__).resolve().parents[1]
HASH = "0123456789abcdef" * 4


def commit_of(footer: str) -> str:
    found = re.search(r"^Commit (`[0-9a-f]{12}`|not a git checkout)", footer, re.MULTILINE)
    assert found is not None, footer
    return found.group(1)


def test_footer_has_command_commit_weights_and_cpu() -> None:
    p = script_provenance(HASH, "cpu", ["evaluation/x.py", "--out", "a b.md"])
    footer = provenance_markdown(p)
    assert "Regenerate: `python evaluation/x.py --out 'a b.md'`" in footer
    assert p["git"]["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", p["git"]["commit"])
    shown = commit_of(footer)
    assert shown == "not a git checkout" if p["git"]["commit"] is None else shown == f"`{p['git']['commit'][:12]}`"
    assert f"prior weights sha256 `{HASH}`" in footer
    assert f"machine: {cpu_model()}," in footer
    document = with_provenance({"rows": [1]}, p)
    assert document == {"rows": [1], "command": p["command"], "provenance": p}


def test_footer_keeps_the_git_state_taken_at_the_start_and_says_when_no_prior() -> None:
    footer = provenance_markdown(script_provenance(None, None, ["s.py"], git={"commit": None, "dirty": None}))
    assert commit_of(footer) == "not a git checkout"
    assert "prior weights sha256 none (no learnt prior)" in footer
    assert "device cpu," in footer


def test_gmm_tune_markdown_ends_with_the_footer(tmp_path: Path) -> None:
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text('- {sampler: diffpir, preset: fast, label: "diffpir"}\n')
    out = tmp_path / "results.md"
    script = "evaluation/gmm/tune.py"
    args = [str(candidates), "--markdown", str(out), "--problems", "1", "--samples", "20", "--dims", "8"]
    args += ["--dims-y", "1", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    text = out.read_text()
    table, _, footer = text.rpartition("\nRegenerate: ")
    assert "| diffpir |" in table
    assert footer.startswith(f"`python {script} {' '.join(args)}`\n\nCommit ")
    assert footer.count("\n") == 3 and footer.endswith(".\n")
    commit_of(footer)
    assert "prior weights sha256 none (no learnt prior)" in footer
    assert f"machine: {cpu_model()}," in footer
