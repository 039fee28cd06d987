"""Atomic file writes: a temporary file in the same folder, then a rename (nothing half-written is ever seen).

Temporary files are named ``.NAME.PID.XXXXXXXX.part`` (:func:`temp_sibling`). A run that is killed outright
(SIGKILL, power loss) cannot remove its own; :func:`remove_stale_parts` removes those of processes that no longer run
when the next run writes into the same folder, and leaves a concurrent run's alone. Published files get the usual
mode (``0666`` less the umask), not ``mkstemp``'s ``0600``. :func:`created_folders` / :func:`remove_empty_folders`
let a failed run take back the folders it made.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

PART_SUFFIX = ".part"
_PART = re.compile(r"^\..+\.(\d+)\.[^.]+\.part$")


def temp_sibling(path: Path) -> Path:
    """A new empty temporary file beside ``path`` (its folder is created), named with this process's id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=PART_SUFFIX, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the usual file mode (``0666`` less the umask) and rename it to ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_parts(folder: Path, own: bool = False) -> list[Path]:
    """Delete ``.*.PID.*.part`` files in ``folder`` whose process no longer runs (and ``.*.part`` files without a
    process id, from before this naming); with ``own`` also this process's (after a failure: a signal can arrive
    between a temporary file's creation and its registration with a writer). Returns what was removed."""
    removed: list[Path] = []
    if not Path(folder).is_dir():
        return removed
    for path in Path(folder).glob(f".*{PART_SUFFIX}"):
        match = _PART.match(path.name)
        if match is not None and _alive(int(match.group(1))) and not (own and int(match.group(1)) == os.getpid()):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def created_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first (what creating ``folder`` would make)."""
    missing: list[Path] = []
    probe = Path(os.path.abspath(folder))
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    return missing


def remove_empty_folders(folders: list[Path]) -> None:
    """``rmdir`` each folder that exists and is empty, deepest first (folders with files in them stay)."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        tmp.write_text(text)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_figure_atomic(fig: Any, path: Path, dpi: int) -> None:
    """Save a matplotlib figure as PNG through a temporary file in the same folder and a rename, then close it
    (a failed save leaves neither the temporary file nor a half-written ``path``)."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
