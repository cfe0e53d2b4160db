"""What the scenarios measure (events, kills, recovery times, latencies, memory), gathered for one block at the end
of the pytest session: a green run stays quiet, and the figures of every scenario are read in one place.

A test calls `report(title, *lines, **values)`; tests/conftest.py prints everything reported under the heading
"figures" (its `pytest_terminal_summary`). Figures are reported, never asserted: speed lives in bench/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Reported:
    title: str
    test: str  # the test's node id, so a figure can be traced to the scenario that measured it
    lines: tuple[str, ...]


_REPORTED: list[Reported] = []


def report(title: str, *lines: str, **values: object) -> None:
    """Record figures under `title`: free-form `lines` (a table, say), then `values` as one `name=value, …` line."""
    if values:
        lines = (*lines, ", ".join(f"{name}={_figure(value)}" for name, value in values.items()))
    # pytest names the running test (and its phase) in this variable.
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    _REPORTED.append(Reported(title, test, lines))


def reported() -> list[Reported]:
    """Everything reported so far in this session, in the order reported."""
    return list(_REPORTED)


def _figure(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
