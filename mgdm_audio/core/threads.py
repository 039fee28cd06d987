"""CPU threads on a shared machine: how many, how they wait, and fewer while other processes are busy.

torch runs its CPU kernels on an OpenMP team. Every parallel region ends at a barrier, so the region lasts as long as
its slowest thread; with more runnable threads than free cores, a thread that lost its core to another process holds
the whole team up, while its team mates spin at the barrier and burn their own time slices. So:

* :func:`available_cpus` counts the CPUs this process may use: its affinity mask (``sched_getaffinity``), capped by
  the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``), rounded up, at least 1.
* :func:`configure` runs before torch is imported (the OpenMP runtime reads its environment once, when torch loads):
  it sets ``OMP_NUM_THREADS`` (and MKL's) to the chosen count and ``OMP_WAIT_POLICY`` to :data:`DEFAULT_WAIT_POLICY`,
  each only where the user has not set it. An explicit count (``--threads N`` or ``OMP_NUM_THREADS``) is kept fixed.
* Otherwise the count adapts (:func:`adapt`, called on the main thread before every network call and acting at most
  every :data:`ADAPT_INTERVAL` seconds): the CPU time that *other* processes used on our CPUs over the last interval,
  ``b = (busy CPU time of our CPUs - our own CPU time) / wall time`` (in cores), gives
  ``threads = max(1, n_cpus - ceil(b - 1/4))``: a competitor using a quarter of a core or more takes one thread away.
  Our own CPU time is the whole process's (``time.process_time``), so the noise-prefetch thread
  (:mod:`mgdm_audio.core.rng`, one serial draw beside each network call) and spinning OpenMP workers count as ours,
  not as a competitor. The busy time is read from ``/proc/stat`` (the lines of our CPUs) or, under a cgroup quota,
  from the cgroup's own usage (``cpu.stat`` / ``cpuacct.usage``), which is what the quota is shared with.

The measurements behind the defaults are in ``evaluation/results/separation_speed.md`` (``evaluation/separation/
contention.py``: the bundled example idle and beside one and two busy processes).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: ``OMP_WAIT_POLICY`` set when the user has not set it (``None``: OpenMP's own default, a short spin then sleep).
DEFAULT_WAIT_POLICY: str | None = None
#: Seconds between two load readings of :func:`adapt`.
ADAPT_INTERVAL = 1.0
THREADS_HELP = (
    "torch CPU threads; 0 (default): OMP_NUM_THREADS if set, else the CPUs this process may use (affinity and cgroup "
    "quota), fewer while other processes keep CPUs busy"
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup's CPU quota in cores (v2 ``cpu.max``, else v1 CFS quota / period); ``None`` when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu,cpuacct", root / "cpu", root):
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def affinity_cpus() -> set[int]:
    """The CPUs this process may run on (all of ``os.cpu_count()`` where affinity is not supported)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity mask capped by the cgroup quota (rounded up), at least 1."""
    n = len(affinity_cpus())
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


@dataclass
class _State:
    cpus: int = 1
    threads: int = 1
    adaptive: bool = False
    last_wall: float | None = None
    last_busy: float | None = None
    last_own: float | None = None


_state = _State()


def configure(threads: int | None = None, environ: dict[str, str] | None = None) -> int:
    """Choose the thread count before torch is imported; returns it.

    ``threads`` > 0 fixes the count (and sets the thread variables, replacing the user's); ``None`` or 0 means
    ``OMP_NUM_THREADS`` when the user set it (fixed), else :func:`available_cpus`, adapted to other processes' load
    by :func:`adapt`. Other variables the user set are never replaced. If torch is already loaded (a program that
    embeds this package, the tests), an explicit count is applied with ``torch.set_num_threads`` and otherwise
    torch's current count is kept, fixed: the program that loaded torch chose it.
    """
    env = os.environ if environ is None else environ
    cpus = available_cpus()
    user_count = env.get("OMP_NUM_THREADS", "").strip()
    loaded = "torch" in sys.modules
    if threads:
        count, adaptive = int(threads), False
        for name in _THREAD_VARIABLES:
            env[name] = str(count)
    elif loaded:
        count, adaptive = int(sys.modules["torch"].get_num_threads()), False
    elif user_count.isdigit() and int(user_count) > 0:
        count, adaptive = int(user_count), False
    else:
        count, adaptive = cpus, True
        for name in _THREAD_VARIABLES:
            env.setdefault(name, str(count))
    if DEFAULT_WAIT_POLICY is not None:
        env.setdefault("OMP_WAIT_POLICY", DEFAULT_WAIT_POLICY)
    global _state
    _state = _State(cpus=cpus, threads=count, adaptive=adaptive)
    if loaded:
        _set_torch_threads(count)
    return count


def _set_torch_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _busy_seconds() -> float | None:
    """CPU seconds used so far on our CPUs by every process (cgroup usage under a quota, else ``/proc/stat``)."""
    if cgroup_cpu_quota() is not None:
        try:
            for line in (CGROUP_ROOT / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        except (OSError, ValueError):
            pass
        for name in ("cpuacct/cpuacct.usage", "cpu,cpuacct/cpuacct.usage", "cpuacct.usage"):
            try:
                return int((CGROUP_ROOT / name).read_text()) / 1e9
            except (OSError, ValueError):
                continue
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    mine = {f"cpu{i}" for i in affinity_cpus()}
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in mine:
            values = [int(v) for v in fields[1:]]
            ticks += sum(values[:8]) - values[3] - values[4]  # all time but idle and iowait (guest is within user)
    return ticks / os.sysconf("SC_CLK_TCK")


def threads_for_load(cpus: int, others: float) -> int:
    """Thread count beside ``others`` cores of other processes' work: ``max(1, cpus - ceil(others - 1/4))``."""
    return max(1, min(cpus, cpus - math.ceil(others - 0.25)))


def adapt(now: float | None = None) -> int:
    """Re-read the load and set torch's thread count (main thread only: OpenMP's count is per calling thread).

    A no-op (returns the current count) unless :func:`configure` chose an adaptive count, nobody else has set
    torch's count since, and :data:`ADAPT_INTERVAL` seconds passed since the last reading.
    """
    s = _state
    if not s.adaptive or threading.current_thread() is not threading.main_thread():
        return s.threads
    if "torch" in sys.modules and sys.modules["torch"].get_num_threads() != s.threads:
        s.adaptive = False  # the count was set by someone else (e.g. a benchmark's worker): theirs stands
        return s.threads
    now = time.monotonic() if now is None else now
    if s.last_wall is not None and now - s.last_wall < ADAPT_INTERVAL:
        return s.threads
    busy, own = _busy_seconds(), time.process_time()
    if busy is None:
        s.adaptive = False
        return s.threads
    if s.last_wall is not None and s.last_busy is not None and s.last_own is not None:
        others = max(0.0, (busy - s.last_busy) - (own - s.last_own)) / (now - s.last_wall)
        target = threads_for_load(s.cpus, others)
        if target != s.threads:
            _set_torch_threads(target)
            s.threads = target
    s.last_wall, s.last_busy, s.last_own = now, busy, own
    return s.threads


def current_threads() -> int:
    """The thread count :func:`configure` / :func:`adapt` last chose."""
    return _state.threads


def threads_adapt() -> bool:
    """Whether the count still follows other processes' load (:func:`adapt`), rather than being fixed."""
    return _state.adaptive
