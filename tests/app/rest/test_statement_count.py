"""The REST shim reads each answer in one statement, however many batches and essays it returns."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.test_statement_count import counting
from tests.app.rest.conftest import Rest
from tests.helpers.events import project, teacher_batches


async def test_list_statements_do_not_grow_with_batches_or_essays(engine: AsyncEngine, api: Rest) -> None:
    await project(engine, teacher_batches("small-teacher", batches=1, essays=3))
    await project(engine, teacher_batches("big-teacher", batches=40, essays=120))
    await api.json("/batches/user/small-teacher")  # warm up: the engine's first-connect queries

    with counting(engine) as small:
        small_list = await api.json("/batches/user/small-teacher", params={"limit": "100"})
    with counting(engine) as big:
        big_list = await api.json("/batches/user/big-teacher", params={"limit": "100"})
    with counting(engine) as one:
        batch = await api.json(f"/batches/{big_list['batches'][0]['batch_id']}/status")

    assert small_list["pagination"]["total"] == 1
    assert big_list["pagination"]["total"] == 40
    assert [len(b["essays"]) for b in big_list["batches"]] == [120] * 40
    assert len(batch["essays"]) == 120
    assert len(big) == len(small), "\n\n".join(big)
    # Each answer is one statement: the chosen batches, their essays with results, and for a list its total.
    assert len(big) == len(one) == 1, "\n\n".join(big + one)
    print(f"{len(big)} statements for a list, {len(one)} for one batch")
