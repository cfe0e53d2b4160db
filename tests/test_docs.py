"""The docs name what the repository has: every path, module and link in README.md, SECURITY.md and docs/*.md.

Modules move and get renamed; prose that still names the old place sends a reader to nothing. Checked here:

- a repository path, written anywhere in the text (`app/cache.py`, `consumer/pure/`, tests/helpers/): a run of
  `name/` segments whose first segment is a tracked top-level file or folder must exist below the root, and a path
  ending in `/` must be a folder. `*` globs. Paths below folders .gitignore lists (bench/results/, .ras-dev/) are
  written by commands and are not checked.
- a dotted name in backticks that starts with one of our packages (`consumer.offsets`,
  `app.graphql.schema.build_schema`): the longest importable prefix is a module and the rest its attributes.
- a Markdown link to a local file (relative to the document) and its `#anchor`, when the target is Markdown.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "consumer", "db", "infra", "devstack", "ras")

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")
SPAN = re.compile(r"`([^`]+)`")
# A run of `segment/` and what follows, not inside a URL, an address (`host:5432/db`) or a longer path.
PATH = re.compile(r"(?<![\w./:@~+*-])((?:[\w.*-]+/)+[\w.*-]*)")
DOTTED = re.compile(rf"(?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Problem:
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.line}: {self.text}"


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]


@cache
def top_level() -> frozenset[str]:
    """The first segment of every tracked path: what a repository path starts with."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
        names = [name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # an exported tree: what is on disk, but what .gitignore lists
        names = [p.name for p in ROOT.iterdir() if not p.name.startswith(".") and not ignored(p.name + "/")]
    return frozenset(name.split("/", 1)[0] for name in names)


@cache
def ignored_folders() -> tuple[str, ...]:
    """The folders .gitignore lists (`bench/results/`): commands write below them, a clone need not have them."""
    lines = (ROOT / ".gitignore").read_text().splitlines()
    return tuple(line.strip().lstrip("/") for line in lines if line.strip().endswith("/") and "*" not in line)


def ignored(path: str) -> bool:
    return any(path.startswith(folder) for folder in ignored_folders())


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def blank(text: str, start: int, end: int) -> str:
    """`text` with [start, end) replaced by spaces, keeping offsets and line numbers."""
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def missing_path(path: str) -> bool:
    if "*" in path:
        return not any(ROOT.glob(path.rstrip("/")))
    target = ROOT / path
    return not (target.is_dir() if path.endswith("/") else target.exists())


def unresolved(dotted: str) -> bool:
    """Whether `dotted` (`package.module.attribute…`, or `module:attribute`) names nothing."""
    parts = dotted.replace(":", ".").split(".")
    for length in range(len(parts), 0, -1):
        name = ".".join(parts[:length])
        try:
            found: object = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # this prefix is no module: try a shorter one
            raise  # the module exists but imports something missing: a real failure, not a doc's
        for attribute in parts[length:]:
            if not hasattr(found, attribute):
                return True
            found = getattr(found, attribute)
        return False
    return True


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but `-` and `_`), spaces as hyphens."""
    plain = re.sub(r"[`*]|\[([^]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", plain).replace(" ", "-")


def anchors(text: str) -> set[str]:
    text = FENCE.sub("", text)
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(text):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def problems(text: str, where: Path) -> list[Problem]:
    """What in `text`, a document at `where`, names something the repository does not have."""
    found: list[Problem] = []

    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (where.parent / file).resolve()
        if file and not linked.exists():
            found.append(Problem(line_of(text, match.start()), f"link to {target}: no such file"))
        elif anchor and (not file or linked.suffix == ".md"):
            headings = anchors(linked.read_text() if file else text)
            if anchor not in headings:
                found.append(Problem(line_of(text, match.start()), f"link to {target}: no such heading"))
    # Link targets are relative to the document; the rest of the text names paths from the root.
    for match in reversed(list(LINK.finditer(text))):
        text = blank(text, match.start(1), match.end(1))

    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".,:;")
        if path.split("/", 1)[0] in top_level() and not ignored(path) and missing_path(path):
            found.append(Problem(line_of(text, match.start()), f"{path} does not exist"))

    prose = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    for span in SPAN.finditer(prose):
        for token in span.group(1).split():
            name = token.rstrip(".,;").removesuffix("()")
            if DOTTED.fullmatch(name) and unresolved(name):
                found.append(Problem(line_of(prose, span.start()), f"{name} is no module or attribute of ours"))
    return sorted(found, key=lambda p: p.line)


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_name_what_exists(document: Path) -> None:
    assert [str(p) for p in problems(document.read_text(), document)] == []


def test_the_check_finds_wrong_names() -> None:
    where = ROOT / "docs" / "made-up.md"
    text = """# Made up

The REST shape is in `app/rest.py` and the mapping in `consumer/projection.py`; settings come from
`ras.settings.Settings`, the loop from `consumer.runner.NoSuchLoop`, and the helpers are in tests/helper/.
`app/cache/` is a file, not a folder. Read [the cache](cache.md), [nothing](nothing.md) and [a heading](#made-up),
[another](#no-such-heading), [the runbook's](runbook.md#no-such-section), and see `tests/*/test_nothing_*.py`.

```
wire bytes ──► consumer/pure/decode.py ──► consumer/pure/wrong.py
```

Right: `app/cache.py`, `consumer/pure/mapping.py`, `db/`, tests/helpers/, `consumer.pure.mapping.rows_for`,
`infra.settings`, `app.main:create_app`, `bench/results/latest.json`, https://example.com/app/nothing.py,
`postgresql+asyncpg://user:pass@host:5432/app/x`, `.venv/bin/python`, (docs/nothing) as prose in parentheses.
"""
    assert [str(p) for p in problems(text, where)] == [
        "3: app/rest.py does not exist",
        "3: consumer/projection.py does not exist",
        "4: tests/helper/ does not exist",
        "4: ras.settings.Settings is no module or attribute of ours",
        "4: consumer.runner.NoSuchLoop is no module or attribute of ours",
        "5: link to nothing.md: no such file",
        "5: app/cache/ does not exist",
        "6: link to #no-such-heading: no such heading",
        "6: link to runbook.md#no-such-section: no such heading",
        "6: tests/*/test_nothing_*.py does not exist",
        "9: consumer/pure/wrong.py does not exist",
        "14: docs/nothing does not exist",
    ]
