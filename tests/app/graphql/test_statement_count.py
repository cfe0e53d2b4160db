"""The number of SQL statements a query issues does not depend on how many batches or essays it returns, and the
gateway's two screens take two each, one per level of the query that reads (each level's loaders fused into one
statement: docs/performance.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import Api
from tests.helpers import ROOT
from tests.helpers.events import EPOCH, project, running_batch, teacher_batches

EXAMPLES = ROOT / "app" / "static" / "examples"
# The gateway's batch screen and a teacher's batch list, as GraphiQL offers them.
BATCH_SCREEN = (EXAMPLES / "2-batch-detail.graphql").read_text()
TEACHER_LIST = (EXAMPLES / "1-teacher-batches.graphql").read_text()
SCREEN_STATEMENTS = 2
# The list with essays below: the batch page with its total; the essay pages with their results and the essays'
# totals (with the running batches' progress); the filtered pages with their totals; each essay's batch.
LIST_STATEMENTS = 4

# A teacher's list screen with every batch's essays and their phase results, plus everything that needs its own
# read: totals, page infos, the current phase, each essay's batch.
LIST_WITH_ESSAYS = """
query($user: String!) {
  batches(userId: $user, first: 100) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges {
      cursor
      node {
        id status clientStatus currentPhase essayCount phaseOutcomes { phase status }
        essays(first: 1000) {
          totalCount
          pageInfo { hasNextPage }
          nodes {
            id filename
            batch { id }
            spellcheck { status correctionCount error { errorCode } }
            cjAssessment { rank score letterGrade }
            phaseResults { __typename phase status }
          }
        }
        failed: essays(phaseStatus: {phase: SPELLCHECK, statuses: [FAILED]}) { totalCount nodes { id } }
      }
    }
  }
}
"""


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_statements_do_not_grow_with_batches_or_essays(engine: AsyncEngine, api: Api) -> None:
    await project(engine, teacher_batches("small-teacher", batches=1, essays=5))
    await project(engine, teacher_batches("big-teacher", batches=50, essays=200))
    await api.data(LIST_WITH_ESSAYS, {"user": "small-teacher"})  # warm up: the engine's first-connect queries

    with counting(engine) as small:
        small_data = await api.data(LIST_WITH_ESSAYS, {"user": "small-teacher"})
    started = time.perf_counter()
    with counting(engine) as big:
        big_data = await api.data(LIST_WITH_ESSAYS, {"user": "big-teacher"})
    elapsed = time.perf_counter() - started

    assert small_data["batches"]["totalCount"] == 1
    assert big_data["batches"]["totalCount"] == 50
    essays = [len(edge["node"]["essays"]["nodes"]) for edge in big_data["batches"]["edges"]]
    assert essays == [200] * 50
    assert len(big) == len(small), "\n\n".join(big)
    assert len(big) == LIST_STATEMENTS, "\n\n".join(big)
    print("\n---\n".join(s[:150] for s in big))
    print(f"{len(big)} statements for 1×5 and for 50×200 essays; the 10,000-essay response took {elapsed:.2f}s")


async def test_the_gateway_screens_take_two_statements(engine: AsyncEngine, api: Api) -> None:
    later = EPOCH + timedelta(days=1)  # the running batches come first in the list
    await project(engine, teacher_batches("small", batches=1, essays=2) + running_batch("small", 2, start=later))
    big = teacher_batches("big", batches=12, essays=60)
    for i in range(3):
        big += running_batch("big", 60, seed=i, start=later + timedelta(minutes=i))
    await project(engine, big)
    await api.data(TEACHER_LIST, {"userId": "small"})  # warm up: the engine's first-connect queries

    counts: dict[str, list[int]] = {}
    for user in ("small", "big"):
        with counting(engine) as listed:
            data = await api.data(TEACHER_LIST, {"userId": user})
        running = data["batches"]["edges"][0]["node"]
        assert running["currentPhase"] == "SPELLCHECK"  # the phase progress was read
        with counting(engine) as screen:
            detail = (await api.data(BATCH_SCREEN, {"batchId": running["id"]}))["batch"]
        assert detail["currentPhase"] == "SPELLCHECK"
        assert detail["essays"]["totalCount"] == len(detail["essays"]["nodes"]) == running["essayCount"]
        assert sum(e["spellcheck"] is not None for e in detail["essays"]["nodes"]) == running["essayCount"] // 2
        counts.setdefault("teacher list", []).append(len(listed))
        counts.setdefault("batch screen", []).append(len(screen))
        for name, statements in (("teacher list", listed), ("batch screen", screen)):
            assert len(statements) == SCREEN_STATEMENTS, f"{name}:\n\n" + "\n\n".join(statements)
    assert counts["teacher list"][0] == counts["teacher list"][1]
    assert counts["batch screen"][0] == counts["batch screen"][1]
