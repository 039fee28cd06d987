"""The benchmark harness: what every engine (``benchmark gmm | separation | image``) shares, and nothing else.

An engine describes its work as *cells*: each cell has a ``key`` (a JSON dict of every value that changes its
numbers: the engine and its version, the sampler and its resolved config, the prior's weight hash, the problem and
its seed) and a ``group`` (cells of one group share set-up, e.g. one GMM problem or one audio chunk, and are
computed together). The engine's ``compute(cells_of_a_group) -> [rows per cell]`` does the sampling and scoring.
:func:`run_cells` does the rest, once for every engine:

* the result cache: one JSON line ``{"digest", "key", "rows"}`` per finished cell, looked up by the SHA-256 of the
  key (:func:`digest`), so that a changed preset, prior or seed can never reuse stale rows, and a killed run
  resumes where it stopped (a truncated last line is ignored);
* processes (``workers``) and ``torchrun`` sharding (:func:`torchrun_shard`: group ``i`` goes to rank
  ``i % world``, each rank appends to its own cache file, rank 0 merges them after a barrier);
* the progress bar.

Around it: one run-spec syntax for ``--samplers`` (:func:`mgdm_audio.samplers.run.parse_run_specs`), one device
resolver (:func:`device_for_rank`), one seed derivation for new engines (:func:`derive_seed`), and one writer
(:func:`write_outputs`: JSON, Markdown, plot, the command line that regenerates them and the :func:`provenance` of
the numbers: git commit, prior weights, machine). This module imports no engine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch
from tqdm import tqdm

from mgdm_audio.core.atomic import write_atomic
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.runtime import resolve_device
from mgdm_audio.core.threads import THREADS_HELP

if TYPE_CHECKING:
    from mgdm_audio.samplers.run import RunSpec

Row = dict[str, Any]


class Cell(Protocol):
    """What the harness needs of an engine's cell."""

    @property
    def key(self) -> dict[str, Any]: ...

    @property
    def group(self) -> Hashable: ...


C = TypeVar("C", bound=Cell)
U = TypeVar("U")


@dataclass(frozen=True)
class RunCell(Generic[U]):
    """A cell of the audio engines: one run (a sampler at a preset, or an oracle) on one ``item`` of data (a track,
    a chunk); ``group`` names the item, so the cells of one item are computed together and its data read once."""

    run: RunSpec
    item: U
    key: dict[str, Any]
    group: Hashable


# ============================================================================================ keys and seeds
def digest(key: dict[str, Any]) -> str:
    """SHA-256 of the key's canonical JSON (sorted keys): the cache's identity of a cell."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def derive_seed(*parts: Any) -> int:
    """A seed in ``[0, 2^31)`` from the parts: the first 4 bytes of ``sha256(json(parts))`` (stable across runs)."""
    return int.from_bytes(hashlib.sha256(json.dumps(list(parts)).encode()).digest()[:4], "big") % (2**31)


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's float32 bytes (images, spectra: data a cell's numbers depend on)."""
    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


# ============================================================================================ cache
def read_cache(path: Path | None) -> dict[str, list[Row]]:
    """Cached rows by digest (a later line wins); unreadable lines (a run killed mid-write) are skipped."""
    done: dict[str, list[Row]] = {}
    if path is None or not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            done[entry["digest"]] = entry["rows"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return done


def append_cache(path: Path | None, key: dict[str, Any], rows: list[Row]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"digest": digest(key), "key": key, "rows": rows}) + "\n")
        f.flush()


def shard_cache_path(cache: Path, rank: int) -> Path:
    """Rank ``rank``'s own cache file beside the shared one (``cache.jsonl`` -> ``cache.jsonl.rank1``)."""
    return cache.with_name(f"{cache.name}.rank{rank}")


# ============================================================================================ sharding
@dataclass(frozen=True)
class Shard:
    """This process's part of a sharded run: rank, world size and the barrier that waits for every rank."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] | None = None


SHARDS_NEED_CACHE = "sharded runs (WORLD_SIZE > 1) need --cache PATH: the ranks merge their results there."


def torchrun_shard(cache: str | Path | None) -> Shard:
    """The shard from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``; gloo barrier), else a single one;
    a sharded run needs a ``cache`` (checked before any work)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard()
    if cache is None:
        raise UserInputError(SHARDS_NEED_CACHE)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Shard(rank, world, dist.barrier)


def device_for_rank(device: str, shard: Shard = Shard()) -> torch.device:
    """:func:`~mgdm_audio.core.runtime.resolve_device`, with one GPU per rank under ``torchrun`` (``LOCAL_RANK``)."""
    if shard.world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return resolve_device(device)


# ============================================================================================ the loop
def _compute_group(task: tuple[Callable[[list[Any]], list[list[Row]]], list[Any], int]) -> tuple[int, list[list[Row]]]:
    """Worker: one group's pending cells (one torch thread per worker process); returns the task's tag."""
    compute, cells, tag = task
    torch.set_num_threads(1)
    return tag, compute(cells)


def run_cells(
    cells: Sequence[C],
    compute: Callable[[list[C]], list[list[Row]]],
    cache: Path | None = None,
    *,
    accept: Callable[[list[Row]], bool] = lambda rows: True,
    workers: int = 1,
    shard: Shard = Shard(),
    cost: Callable[[list[C]], float] | None = None,
    progress: bool = True,
    desc: str = "benchmark",
    status: Callable[[C], str] = lambda cell: "",
) -> list[list[Row]] | None:
    """The rows of every cell, in the order of ``cells``: from the cache when its digest is there (and
    ``accept(rows)``), else computed group by group and appended to the cache as each group finishes.

    ``workers > 1``: groups run in that many spawned processes (``compute`` and the cells must pickle); ``cost``
    orders them, largest first. Results do not depend on ``workers``. Sharded (``shard.world > 1``, needs a
    cache): rank ``r`` computes the groups ``i % world == r``; rank 0 merges every rank's file into ``cache`` and
    returns all rows, the other ranks return None.
    """
    if shard.world > 1 and cache is None:
        raise UserInputError(SHARDS_NEED_CACHE)
    own_cache = cache if shard.world == 1 or cache is None else shard_cache_path(cache, shard.rank)
    done = read_cache(cache)
    if own_cache != cache:
        done.update(read_cache(own_cache))
    digests = [digest(cell.key) for cell in cells]
    groups: dict[Hashable, list[int]] = {}
    for i, cell in enumerate(cells):
        groups.setdefault(cell.group, []).append(i)
    mine = [idx for g, idx in enumerate(groups.values()) if g % shard.world == shard.rank]
    tasks = [[i for i in idx if digests[i] not in done or not accept(done[digests[i]])] for idx in mine]
    tasks = [t for t in tasks if t]
    total = sum(len(idx) for idx in mine)
    bar = tqdm(total=total, desc=desc, unit="run", disable=not progress)
    bar.update(total - sum(len(t) for t in tasks))

    def record(indices: list[int], results: list[list[Row]]) -> None:
        for i, rows in zip(indices, results, strict=True):
            done[digests[i]] = rows
            append_cache(own_cache, cells[i].key, rows)
        bar.set_postfix_str(status(cells[indices[0]]))
        bar.update(len(indices))

    if workers > 1 and len(tasks) > 1:
        if cost is not None:
            tasks.sort(key=lambda t: -cost([cells[i] for i in t]))
        with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
            jobs = [(compute, [cells[i] for i in t], tag) for tag, t in enumerate(tasks)]
            for tag, results in pool.imap_unordered(_compute_group, jobs):
                record(tasks[tag], results)
    else:
        for t in tasks:
            record(t, compute([cells[i] for i in t]))
    bar.close()
    if shard.world > 1:
        assert cache is not None
        if shard.barrier is not None:
            shard.barrier()
        if shard.rank != 0:
            return None
        in_main = read_cache(cache)
        keys = {d: cell.key for cell, d in zip(cells, digests, strict=True)}
        for r in range(shard.world):
            part = shard_cache_path(cache, r)
            for d, rows in read_cache(part).items():
                done[d] = rows
                if d in keys and (d not in in_main or not accept(in_main[d])):
                    append_cache(cache, keys[d], rows)
            part.unlink(missing_ok=True)
    missing = [cells[i] for i, d in enumerate(digests) if d not in done]
    if missing:
        raise UserInputError(
            f"no result for {status(missing[0]) or 'a cell'}: a rank stopped early; rerun the same command "
            "(finished cells are reused from the cache)."
        )
    return [done[d] for d in digests]


# ============================================================================================ output
@dataclass
class Report:
    """What an engine hands back: the JSON document, the Markdown text and, if it draws one, its plot; and for the
    provenance, the SHA-256 of the prior's weights (``None``: no learnt prior, e.g. the exact GMM) and the device
    the numbers were computed on."""

    payload: dict[str, Any]
    text: str
    plot: Callable[[Path], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None
    device: str | None = None


def command_line(argv: Sequence[str]) -> str:
    """The shell command that regenerates an output: ``mgdm-audio`` and the arguments as given."""
    return shlex.join(["mgdm-audio", *argv])


def git_state(folder: Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the checkout holding this package (``None`` for both outside a git checkout);
    dirty: tracked files differ from the commit (untracked files, e.g. new results, are not counted)."""
    folder = folder or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str | None) -> dict[str, Any]:
    """Where the numbers were computed: CPU model, CPUs this process may use, torch threads (and whether they
    adapt to load), the device (and the GPU's name on CUDA), torch and Python versions."""
    from mgdm_audio.core.threads import available_cpus, threads_adapt

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpus": available_cpus(),
        "torch_threads": torch.get_num_threads(),
        "threads_adapt": threads_adapt(),
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device is not None and device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def provenance(report: Report, argv: Sequence[str] | None, git: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a results file records about its numbers: the command that regenerates them, the git commit (and
    whether tracked files had uncommitted changes; ``git``: :func:`git_state` taken when the run started, else
    now), the prior's weight SHA-256 and the machine. Rows served from a cache keep the numbers of the commit that
    computed them; the cache key guarantees only that their settings, data and weights are the same."""
    return {
        "command": command_line(argv) if argv is not None else " ".join(["python", *sys.argv]),
        "git": git if git is not None else git_state(),
        "weights_sha256": report.weights_sha256,
        "machine": machine(report.device),
    }


def provenance_markdown(p: dict[str, Any]) -> str:
    """The Markdown footer: the command, then commit, prior weights and machine in one line."""
    git, m = p["git"], p["machine"]
    commit = "not a git checkout" if git["commit"] is None else f"`{git['commit'][:12]}`"
    if git["dirty"]:
        commit += " with uncommitted changes"
    weights = "none (no learnt prior)" if p["weights_sha256"] is None else f"`{p['weights_sha256']}`"
    threads = f"{m['torch_threads']} torch thread{'s' if m['torch_threads'] != 1 else ''}"
    threads += " (adapting to load)" if m["threads_adapt"] else ""
    device = m["device"] or "cpu"
    device += f" ({m['gpu']})" if m.get("gpu") else ""
    return (
        f"\nRegenerate: `{p['command']}`\n\n"
        f"Commit {commit}; prior weights sha256 {weights}; machine: {m['cpu']}, {m['cpus']} CPUs, {threads}, "
        f"device {device}, torch {m['torch']}.\n"
    )


def script_provenance(
    weights_sha256: str | None,
    device: str | None,
    argv: Sequence[str] | None = None,
    git: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The :func:`provenance` of a stand-alone script under ``evaluation/``: the command is ``python`` and
    ``argv`` (the script's path, then its arguments; ``None``: ``sys.argv``), shell-quoted; ``weights_sha256``: the
    SHA-256 of the learnt weights the script loaded (``None``: none); ``device``: where it computed. Call it when the
    script starts, before the long work, so that ``git`` (default: :func:`git_state` now) is the code the numbers come
    from; end a Markdown results file with :func:`provenance_markdown` and add :func:`with_provenance` to JSON."""
    report = Report(payload={}, text="", weights_sha256=weights_sha256, device=device)
    found = provenance(report, None, git)
    return {**found, "command": shlex.join(["python", *(sys.argv if argv is None else argv)])}


def with_provenance(document: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """A JSON results document with the top-level ``"command"`` and ``"provenance"`` (:func:`provenance`)."""
    return {**document, "command": p["command"], "provenance": p}


def write_outputs(
    report: Report,
    json_path: str | Path | None,
    markdown_path: str | Path | None,
    plot_path: str | Path | None,
    argv: Sequence[str] | None,
    git: dict[str, Any] | None = None,
) -> None:
    """Write the JSON (with ``"command"`` and ``"provenance"``), the Markdown (ending with the command and the
    provenance line) and the plot, each atomically; ``git``: the :func:`git_state` when the run started."""
    prov = provenance(report, argv, git) if json_path or markdown_path else None
    if json_path and prov is not None:
        write_atomic(Path(json_path), json.dumps(with_provenance(report.payload, prov), indent=1) + "\n")
    if markdown_path and prov is not None:
        write_atomic(Path(markdown_path), report.text + provenance_markdown(prov))
    if plot_path and report.plot is not None:
        report.plot(Path(plot_path))


def add_output_arguments(parser: argparse.ArgumentParser, plot_help: str) -> None:
    """The flags every engine has: ``--json``, ``--markdown``, ``--plot`` (the engine's figure), ``--cache``,
    ``--threads``, ``--no-progress``."""
    parser.add_argument("--json", metavar="PATH", help="write the document (rows, summary, settings) as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    parser.add_argument("--plot", metavar="PNG", help=plot_help)
    parser.add_argument(
        "--cache",
        metavar="PATH",
        help="JSON-lines cache of finished cells, keyed by everything that changes their numbers (a folder is "
        "given the file cells.jsonl); a killed run resumes",
    )
    parser.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def cache_file(path: str | Path | None) -> Path | None:
    """``--cache``: the file, or ``cells.jsonl`` in it when it names a folder (an existing one, or ending in ``/``)."""
    if path is None:
        return None
    folder = Path(path).is_dir() or str(path).endswith("/")
    return Path(path) / "cells.jsonl" if folder else Path(path)


# ============================================================================================ formatting
def finite_or_none(value: float, digits: int | None = None) -> float | None:
    """``value`` as a float (rounded to ``digits``), or ``None`` for NaN and infinities (JSON has neither)."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return value if digits is None else round(value, digits)


def fmt(value: float | None, digits: int = 2) -> str:
    """A table cell: ``value`` with ``digits`` decimals, ``–`` when missing."""
    return "–" if value is None else f"{value:.{digits}f}"


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are present, ``None`` when none is."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
