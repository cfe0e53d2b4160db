"""Node packages for the tests that drive a node tool (graphql-http's audit, Apollo's composition): node and npm
from the PATH, and the packages installed at pinned versions into a directory of the test session, so a new
release cannot fail an unchanged service. Such a test is skipped, with the reason, when node or npm is missing or
older than it needs, or when npm cannot install (no registry in reach)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

# Guards against a hang only (an install that never ends), never a measure of speed.
INSTALL_GUARD_SECONDS = 300


def _node_major(node: str) -> int:
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    return int(version.strip().lstrip("v").split(".")[0])


def installed(
    tmp_path_factory: pytest.TempPathFactory, name: str, packages: Sequence[str], min_node: int = 18
) -> tuple[str, Path]:
    """node, and an npm prefix (a fresh directory named after `name`) holding `packages`; skips the test otherwise."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"needs node and npm ({name} is a node package)")
    if _node_major(node) < min_node:
        pytest.skip(f"needs node {min_node} or later for {name}")
    prefix = tmp_path_factory.mktemp(name)
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save", *packages],
            capture_output=True,
            text=True,
            timeout=INSTALL_GUARD_SECONDS,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install of {name} did not finish (registry unreachable?)")
    if done.returncode != 0:
        pytest.skip(f"npm install of {name} failed (registry unreachable?): {done.stderr[-500:]}")
    return node, prefix
