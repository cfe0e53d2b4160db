"""The number of SQL statements a query issues does not depend on how many batches or essays it returns."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import Api
from tests.helpers.events import project, teacher_batches

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
    print("\n---\n".join(s[:150] for s in big))
    print(f"{len(big)} statements for 1×5 and for 50×200 essays; the 10,000-essay response took {elapsed:.2f}s")
