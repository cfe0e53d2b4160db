"""SECURITY.md's table of hostile inputs cannot rot: every row names a test, and every test it names exists.

A row's test is written `tests/path.py::test_name` (a module-level test function, parameters left out); a rename or
deletion that leaves the row naming nothing fails here, not silently. Section rows (a bold title, empty cells) name
no test. The findings table's tests, named by file, must exist as files (tests/test_docs.py checks paths too).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECURITY = ROOT / "SECURITY.md"
TABLE_HEADING = "## Hostile inputs, and the test of each"
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
SECTION = re.compile(r"^\| \*\*[^|]+\*\* \| \| \|$")


def table_rows(text: str) -> list[str]:
    """The data rows of the hostile-inputs table (header and separator left out)."""
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| attack | expected | test |"), rows[0]
    return rows[1:]


@cache
def defined_tests(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text(), path)
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return frozenset(node.name for node in tree.body if isinstance(node, kinds) and node.name.startswith("test_"))


def missing(nodes: list[tuple[str, str]]) -> list[str]:
    """The `path::name` of every node that names no test function of an existing file."""
    return [f"{p}::{n}" for p, n in nodes if not (ROOT / p).is_file() or n not in defined_tests(p)]


def test_every_row_names_one_test_and_says_what_is_expected() -> None:
    problems = []
    for row in table_rows(SECURITY.read_text()):
        if SECTION.match(row):
            continue
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        if len(cells) != 3 or not cells[0] or not cells[1]:
            problems.append(f"not an attack | expected | test row: {row[:100]}")
        elif len(NODE.findall(cells[2])) != 1:
            problems.append(f"no single tests/…py::test_name in: {row[:100]}")
    assert not problems, "\n".join(problems)


def test_every_test_security_md_names_exists() -> None:
    nodes = NODE.findall(SECURITY.read_text())
    assert len(nodes) >= 60, "the table lost rows"
    assert not missing(nodes), f"SECURITY.md names tests that do not exist: {missing(nodes)}"


def test_a_renamed_test_is_caught() -> None:
    # The check itself can fail: a name one character off, or a file that is not there, is reported.
    assert missing([("tests/test_security.py", "test_a_renamed_test_is_caugh")]) != []
    assert missing([("tests/no_such_module.py", "test_a_renamed_test_is_caught")]) != []
    assert missing([("tests/test_security.py", "test_a_renamed_test_is_caught")]) == []
