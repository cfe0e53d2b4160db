"""`Projection.waitFor` is answered from waits made before execution (app/graphql/consistency.py): every `waitFor`
the operation would execute is found, through fragments, inline fragments and aliases, and none that @skip or
@include leaves out; a refused wait is that field's error (with its path), as a resolver's would be."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import Api

SPREAD = """
query Spread { ...Probe }
fragment Probe on Query {
  projection {
    ... on Projection { applied: waitFor(topic: "t", partition: 0, offset: 5, timeoutMs: 0) }
    later: waitFor(topic: "t", partition: 0, offset: 50, timeoutMs: 0)
    other: waitFor(topic: "t", partition: 1, offset: 0, timeoutMs: 0)
  }
}
"""


async def _stored(engine: AsyncEngine, next_offset: int) -> None:
    async with engine.begin() as conn:
        insert = text("INSERT INTO consumer_positions (topic, partition, next_offset) VALUES ('t', 0, :n)")
        await conn.execute(insert, {"n": next_offset})


async def test_every_executed_wait_for_is_answered(api: Api, engine: AsyncEngine) -> None:
    await _stored(engine, 10)
    data = await api.data(SPREAD)
    assert data == {"projection": {"applied": True, "later": False, "other": False}}


async def test_skipped_wait_for_is_neither_waited_for_nor_answered(api: Api, engine: AsyncEngine) -> None:
    await _stored(engine, 10)
    query = """
    query($skip: Boolean!) {
      projection {
        quarantinedCount
        waitFor(topic: "t", partition: 0, offset: 5, timeoutMs: 0) @skip(if: $skip)
        again: waitFor(topic: "t", partition: 0, offset: 5, timeoutMs: 0) @include(if: $skip)
      }
    }
    """
    assert await api.data(query, {"skip": True}) == {"projection": {"quarantinedCount": 0, "again": True}}
    assert await api.data(query, {"skip": False}) == {"projection": {"quarantinedCount": 0, "waitFor": True}}


async def test_a_refused_wait_is_the_fields_error(api: Api) -> None:
    response = await api.post(
        '{ projection { quarantinedCount waitFor(topic: "t", partition: 0, offset: -1, timeoutMs: 0) } }'
    )
    body = response.json()
    assert body["data"] is None  # waitFor and projection are non-null: the null reaches the root
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["path"] == ["projection", "waitFor"]
