"""What a request read, recorded on its context for the result cache: batch ids, user-list views, cacheability."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import Caller
from app.graphql.schema import build_schema
from app.limits import ApiLimits
from app.reads.context import RequestContext, new_context
from app.reads.loaders import ALL_USERS
from tests.app.graphql.conftest import FIXTURE_BATCH, FIXTURE_USER

SCHEMA = build_schema()


async def _run(engine: AsyncEngine, query: str, user: str | None = None) -> RequestContext:
    context = new_context(engine, Caller("api-gateway-service", user), "test", ApiLimits())
    try:
        result = await SCHEMA.execute(query, context_value=context)
    finally:
        await context.close()
    assert result.errors is None, result.errors
    return context


async def test_batch_reads_are_tagged_by_id(engine: AsyncEngine, gen2: None) -> None:
    context = await _run(engine, f'{{ batch(id: "{FIXTURE_BATCH}") {{ id }} missing: batch(id: "nope") {{ id }} }}')
    assert context.read_batches == {FIXTURE_BATCH, "nope"}  # a batch not there yet is tagged too
    assert context.read_user_lists == set()
    assert context.tags.cacheable


async def test_list_reads_are_tagged_by_user(engine: AsyncEngine, gen2: None) -> None:
    scoped = await _run(engine, "{ batches { totalCount nodes { id } } }", user=FIXTURE_USER)
    assert scoped.read_user_lists == {FIXTURE_USER}
    assert scoped.read_batches == {FIXTURE_BATCH}
    everyone = await _run(engine, "{ batches { totalCount } }")
    assert everyone.read_user_lists == {ALL_USERS}


async def test_essay_and_projection_reads(engine: AsyncEngine, gen2: None) -> None:
    linked = await _run(engine, '{ essay(id: "bb52cb47-ff0d-5c47-86ea-11c46b2b904a") { id } }')
    assert linked.read_batches == {FIXTURE_BATCH}
    assert linked.tags.cacheable
    missing = await _run(engine, '{ essay(id: "nope") { id } }')
    assert not missing.tags.cacheable  # it may appear under a batch no tag names yet
    projection = await _run(engine, "{ projection { totalLag } }")
    assert not projection.tags.cacheable


async def test_entities_are_tagged_as_batch_and_essay_reads(engine: AsyncEngine, gen2: None) -> None:
    entities = "{ _entities(representations: [%s]) { __typename } }"
    batch = '{__typename: "Batch", id: "%s"}'
    essay = '{__typename: "Essay", id: "%s"}'
    found = await _run(engine, entities % f"{batch % 'nope'}, {essay % 'bb52cb47-ff0d-5c47-86ea-11c46b2b904a'}")
    assert found.read_batches == {"nope", FIXTURE_BATCH}  # the essay's batch, and the batch asked for
    assert found.tags.cacheable
    foreign = await _run(engine, entities % (batch % FIXTURE_BATCH), user="someone-else")
    assert foreign.read_batches == {FIXTURE_BATCH} and foreign.tags.cacheable  # null, evicted with the batch
    missing = await _run(engine, entities % (essay % "nope"))
    assert not missing.tags.cacheable
