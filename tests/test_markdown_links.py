"""Every relative link in the repository's Markdown files points at a file or folder that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "build", "dist", "runs", "separated"}
# [text](target) and ![alt](target), the target up to the first space or closing parenthesis; code spans are dropped
LINK = re.compile(r"!?\[[^\]]*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def markdown_files() -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob("*.md")
        if not any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)
    )


def relative_targets(text: str) -> list[str]:
    targets = [angled or bare for angled, bare in LINK.findall(CODE.sub("", text))]
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^#", t)]


def test_link_pattern_finds_relative_targets_only() -> None:
    text = "[a](x/y.md#z) ![b](img.png) [c](https://e.org) [d](#top) `[e](nope.md)` [f](<g h.md>)"
    assert relative_targets(text) == ["x/y.md#z", "img.png", "g h.md"]


def test_every_relative_markdown_link_resolves() -> None:
    files = markdown_files()
    assert ROOT / "README.md" in files
    broken = []
    for path in files:
        for target in relative_targets(path.read_text(encoding="utf-8")):
            file_part = target.split("#", 1)[0]
            if file_part and not (path.parent / file_part).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
