"""Output names and the overwrite rule shared by ``separate``, ``generate`` and ``restore``.

One rule for every command: all output paths of a run are worked out, and checked, before any work.

* Two inputs never share a track folder. Inputs whose file names (without extension) collide get distinct names,
  found by :func:`distinct_track_names`: the extension is added (``song.wav song.flac`` -> ``song_wav``,
  ``song_flac``), then the parent folders, nearest first (``a/song.wav b/song.wav`` -> ``a_song``, ``b_song``),
  until every name is unique. Names that do not collide stay as they are. The same file given twice is refused.
* Two outputs of one run never map to the same file (e.g. a ``--filename`` template without ``{track}`` for two
  inputs): :func:`refuse_duplicate_targets` refuses the run, naming both.
* An existing output is refused unless ``--force`` (:func:`refuse_existing`); ``separate`` can also skip the track.

``--filename`` templates (as Demucs's): ``{track}`` (the track name above), ``{trackext}`` (the input's extension),
``{stem}`` and ``{ext}`` (the output's extension), relative to ``OUT/PRIOR``. A track's other files use the same
template with ``{stem}`` ``run`` (``{ext}`` ``json``), ``separation`` (``png``) and ``samples/STEM_k``.
"""

from __future__ import annotations

import os
import string
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from mgdm_audio.core.errors import UserInputError

#: Demucs's default layout: ``OUT/PRIOR/TRACK/STEM.EXT``.
DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
TEMPLATE_FIELDS = ("track", "trackext", "stem", "ext")


def _label(path: Path, depth: int, with_ext: bool) -> str:
    parents = path.parent.parts[len(path.parent.parts) - depth :] if depth else ()
    parts = [p for p in parents if p not in ("/", "")]
    name = "_".join([*parts, path.stem])
    return f"{name}_{path.suffix.lstrip('.')}" if with_ext and path.suffix else name


def distinct_track_names(files: Sequence[Path]) -> list[str]:
    """One track name per input: its file name without extension, made distinct where names collide (module
    docstring). Raises :class:`UserInputError` for a file given twice."""
    resolved = [Path(os.path.abspath(f)) for f in files]
    seen: dict[Path, Path] = {}
    for given, absolute in zip(files, resolved, strict=True):
        if absolute in seen:
            raise UserInputError(f"input {given} is given twice (also as {seen[absolute]}); give each file once.")
        seen[absolute] = given
    names = [p.stem for p in resolved]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[name].append(i)
    taken = {name for name, members in groups.items() if len(members) == 1}
    for members in (m for m in groups.values() if len(m) > 1):
        depth_limit = max(len(resolved[i].parent.parts) for i in members)
        for depth in range(depth_limit + 1):
            for with_ext in (False, True) if depth else (True,):
                labels = [_label(resolved[i], depth, with_ext) for i in members]
                if len(set(labels)) == len(labels) and not taken & set(labels):
                    break
            else:
                continue
            break
        else:  # only reachable for pathological names (e.g. a file named like another's disambiguated label)
            raise UserInputError(
                f"inputs {', '.join(str(files[i]) for i in members)} cannot be given distinct track folders; "
                "rename one of them."
            )
        for i, label in zip(members, labels, strict=True):
            names[i] = label
        taken |= set(labels)
    return names


def check_template(template: str) -> str:
    """A ``--filename`` template: known fields only, ``{stem}`` present, relative, no ``..``; returns it."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise UserInputError(f"--filename {template!r} is not a valid template ({err}).") from None
    unknown = sorted(fields - set(TEMPLATE_FIELDS))
    if unknown:
        raise UserInputError(
            f"--filename {template!r} uses unknown fields {unknown}; known: {', '.join(TEMPLATE_FIELDS)}."
        )
    if "stem" not in fields:
        raise UserInputError(f"--filename {template!r} must contain {{stem}} (each stem needs its own file).")
    pure = PurePosixPath(template)
    if pure.is_absolute() or ".." in pure.parts or template.endswith("/"):
        raise UserInputError(f"--filename {template!r} must be a relative file path inside the output folder.")
    return template


def format_target(template: str, track: str, trackext: str, stem: str, ext: str) -> Path:
    """The path a template gives (relative to the output root)."""
    return Path(template.format(track=track, trackext=trackext.lstrip("."), stem=stem, ext=ext.lstrip(".")))


def refuse_duplicate_targets(targets: Sequence[tuple[Path, str]]) -> None:
    """``targets``: ``(path, what)`` pairs of one run; refuse the run if two of them are the same file."""
    owner: dict[Path, str] = {}
    for path, what in targets:
        key = Path(os.path.abspath(path))
        if key in owner:
            raise UserInputError(f"{owner[key]} and {what} would both be written to {path}; check --filename.")
        owner[key] = what


def refuse_existing(paths: Sequence[Path], force: bool, alternatives: str = "") -> None:
    """The overwrite rule: an existing output is refused unless ``force``; ``alternatives`` names other flags."""
    if force:
        return
    for path in paths:
        if Path(path).exists():
            extra = f" or {alternatives}" if alternatives else ""
            raise UserInputError(f"{path} already exists; use --force to overwrite it{extra}.")
