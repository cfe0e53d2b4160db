"""The repository stands alone: no tracked file reads or links a path above the repository root.

A user has a clone and nothing beside it, so a relative path that climbs out of the repository (`../elsewhere/…` in a
doc link, `Path(__file__).parents[3]` in a test) works only on the machine it was written on.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A run of `../` and what follows it, as a link, a string or a shell argument writes it.
CLIMB = re.compile(r"(?:\.\./)+[\w.\-/]*")
PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?\.parents\[(\d+)\]")
# Places a user's machine does not have, whatever the relative path that reaches them.
FOREIGN = re.compile(r"shared/contracts|/work/")
SKIPPED_SUFFIXES = {".png", ".jpg", ".ico", ".woff", ".woff2", ".gz", ".br"}


def tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # an exported tree: every file below the root
        return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts]
    return [ROOT / name for name in listed.decode().split("\0") if name]


def escapes(base: Path, relative: str) -> bool:
    return not Path(os.path.normpath(base / relative)).is_relative_to(ROOT)


def violations(relative: Path, text: str) -> list[str]:
    """What in `text`, the content of the file at `relative` (to the root), refers outside the repository."""
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{relative}:{number}"
        found += [
            f"{where}: {m.group()!r} leaves the repository"
            for m in CLIMB.finditer(line)
            if escapes((ROOT / relative).parent, m.group())
        ]
        found += [
            f"{where}: parents[{m.group(1)}] is above the repository root"
            for m in PARENTS.finditer(line)
            if int(m.group(1)) >= len(relative.parts)
        ]
        found += [f"{where}: {m.group()!r} names a place outside the repository" for m in FOREIGN.finditer(line)]
    return found


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""


def test_no_tracked_file_refers_above_the_repository_root() -> None:
    files = [p for p in tracked_files() if p.suffix not in SKIPPED_SUFFIXES and p != Path(__file__).resolve()]
    assert len(files) > 100, "the listing found the repository's files"
    found = [v for path in files for v in violations(path.relative_to(ROOT), read(path))]
    assert not found, "\n".join(found)


def test_the_check_sees_each_kind_of_climb() -> None:
    assert violations(Path("docs/a.md"), "[ok](../contracts/EVENTS.md) [x](../../contracts/EVENTS.md)") == [
        "docs/a.md:1: '../../contracts/EVENTS.md' leaves the repository"
    ]
    assert len(violations(Path("tests/a.py"), "Path(__file__).resolve().parents[1] / 'contracts'")) == 0
    assert len(violations(Path("tests/a.py"), "Path(__file__).resolve().parents[2] / 'shared'")) == 1
    assert len(violations(Path("README.md"), "see shared/contracts/REST.md")) == 1
