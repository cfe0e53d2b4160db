"""RAS as an Apollo Federation 2 subgraph: `_service { sdl }` is schema.graphql, and `_entities` resolves Batch and
Essay through the request's loaders, scoped to X-User-ID like `batch` and `essay`, within the API's limits."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.limits import ApiLimits
from tests.app.graphql.conftest import FIXTURE_BATCH, FIXTURE_USER, Api, api_for
from tests.app.graphql.test_schema import SDL_FILE
from tests.app.graphql.test_statement_count import counting
from tests.helpers.events import project, teacher_batches

ESSAY = "bb52cb47-ff0d-5c47-86ea-11c46b2b904a"  # an essay of FIXTURE_BATCH
MISSING = "00000000-0000-4000-8000-000000000000"

ENTITIES = """
query($representations: [_Any!]!) {
  _entities(representations: $representations) {
    __typename
    ... on Batch { id userId essays { totalCount nodes { id } } }
    ... on Essay { id batch { id } spellcheck { status } }
  }
}
"""


def batch(batch_id: str) -> dict[str, str]:
    return {"__typename": "Batch", "id": batch_id}


def essay(essay_id: str) -> dict[str, str]:
    return {"__typename": "Essay", "id": essay_id}


async def entities(api: Api, representations: list[Any], user: str | None = None) -> list[Any]:
    data = await api.data(ENTITIES, {"representations": representations}, user=user)
    found: list[Any] = data["_entities"]
    return found


async def test_service_sdl_is_schema_graphql(api: Api) -> None:
    data = await api.data("{ _service { sdl } }")
    assert data["_service"]["sdl"] + "\n" == SDL_FILE.read_text(encoding="utf-8")
    assert '@link(url: "https://specs.apollo.dev/federation/v2.0", import: ["@key"])' in data["_service"]["sdl"]
    assert 'type Batch @key(fields: "id")' in data["_service"]["sdl"]
    assert 'type Essay @key(fields: "id")' in data["_service"]["sdl"]


async def test_service_sdl_is_refused_with_introspection(engine: AsyncEngine) -> None:
    api = api_for(engine, limits=ApiLimits(introspection=False, graphiql=False))
    async with api.client:
        [error] = await api.errors("{ _service { sdl } }")
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert "RAS_INTROSPECTION_ENABLED" in error["message"]


async def test_batch_and_essay_entities_found_and_not_found(api: Api, gen2: None) -> None:
    found = await entities(api, [batch(FIXTURE_BATCH), essay(ESSAY), batch(MISSING), essay(MISSING)])
    assert [entity and entity["__typename"] for entity in found] == ["Batch", "Essay", None, None]
    assert found[0]["id"] == FIXTURE_BATCH and found[0]["userId"] == FIXTURE_USER
    assert ESSAY in [e["id"] for e in found[0]["essays"]["nodes"]]
    assert found[1]["id"] == ESSAY and found[1]["batch"] == {"id": FIXTURE_BATCH}


async def test_entities_follow_the_callers_scope(api: Api, gen2: None) -> None:
    asked = [batch(FIXTURE_BATCH), essay(ESSAY)]
    assert await entities(api, asked, user="someone-else") == [None, None]
    own = await entities(api, asked, user=FIXTURE_USER)
    assert [entity["id"] for entity in own] == [FIXTURE_BATCH, ESSAY]
    unscoped = await entities(api, asked)  # the service itself sees every batch
    assert unscoped == own


async def test_the_same_request_again_gets_the_same_answer(api: Api, gen2: None) -> None:
    # Strawberry's resolver takes each representation apart; the next request with the same body (whose parsed
    # variables keys.py memoizes) must still find them whole.
    asked = [batch(FIXTURE_BATCH), essay(ESSAY)]
    first = await entities(api, asked, user=FIXTURE_USER)
    assert await entities(api, asked, user=FIXTURE_USER) == first
    assert [entity["id"] for entity in first] == [FIXTURE_BATCH, ESSAY]


async def test_a_mixed_list_reads_as_many_statements_as_one_entity(engine: AsyncEngine, api: Api) -> None:
    await project(engine, teacher_batches("many", batches=30, essays=4))
    listed = await api.data('{ batches(userId: "many", first: 30) { nodes { id essays { nodes { id } } } } }')
    batch_ids = [node["id"] for node in listed["batches"]["nodes"]]
    essay_ids = [node["essays"]["nodes"][0]["id"] for node in listed["batches"]["nodes"]]
    one = [batch(batch_ids[0]), essay(essay_ids[0])]
    many = [batch(b) for b in batch_ids] + [essay(e) for e in essay_ids] + [batch(MISSING), essay(MISSING)]
    await entities(api, one)  # warm up: the engine's first-connect queries

    with counting(engine) as few_statements:
        few = await entities(api, one, user="many")
    with counting(engine) as many_statements:
        found = await entities(api, many, user="many")

    assert [entity["id"] for entity in few] == [batch_ids[0], essay_ids[0]]
    assert [entity and entity["id"] for entity in found] == [*batch_ids, *essay_ids, None, None]
    assert len(many_statements) == len(few_statements), "\n\n".join(many_statements)
    print(f"{len(many_statements)} statements for {len(one)} and for {len(many)} representations")


async def test_too_many_representations_are_refused_before_reading(engine: AsyncEngine, gen2: None) -> None:
    api = api_for(engine, limits=ApiLimits(max_entities=3))
    async with api.client:
        assert len(await entities(api, [batch(FIXTURE_BATCH)] * 3)) == 3
        with counting(engine) as statements:
            [error] = await api.errors(ENTITIES, {"representations": [batch(FIXTURE_BATCH)] * 4})
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED" and error["extensions"]["limit"] == 3
    assert "4 representations" in error["message"] and "RAS_MAX_ENTITY_REPRESENTATIONS" in error["message"]
    assert statements == []


async def test_entities_count_as_list_items_for_the_node_limit(engine: AsyncEngine) -> None:
    api = api_for(engine, limits=ApiLimits(max_nodes=250))
    async with api.client:
        assert await entities(api, [batch(MISSING)] * 2) == [None, None]  # 2 + 2 × 100 essays
        [error] = await api.errors(ENTITIES, {"representations": [batch(MISSING)] * 3})
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED" and error["extensions"]["limit"] == 250


@pytest.mark.parametrize(
    ("representation", "expected"),
    [
        ("7b1f0c52", "representations[1] must be an object with __typename and id."),
        ({"id": FIXTURE_BATCH}, "representations[1]: __typename must be one of Batch, Essay; got None."),
        ({"__typename": "Projection"}, "__typename must be one of Batch, Essay; got 'Projection'."),
        ({"__typename": "Batch"}, 'Batch representations are the key alone, {"__typename": "Batch", "id": "…"}.'),
        ({"__typename": "Essay", "id": 7}, 'Essay representations are the key alone, {"__typename": "Essay", "id"'),
        ({"__typename": "Batch", "id": FIXTURE_BATCH, "userId": "x"}, "Batch representations are the key alone"),
    ],
)
async def test_a_malformed_representation_is_refused_by_its_index(api: Api, representation: Any, expected: str) -> None:
    [error] = await api.errors(ENTITIES, {"representations": [batch(FIXTURE_BATCH), representation]})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert expected in error["message"]


async def test_representations_in_the_document_are_checked_too(api: Api, gen2: None) -> None:
    query = '{ _entities(representations: [{__typename: "Batch", id: "%s"}]) { ... on Batch { id } } }'
    assert await api.data(query % FIXTURE_BATCH) == {"_entities": [{"id": FIXTURE_BATCH}]}
    [error] = await api.errors('{ _entities(representations: {__typename: "Essay"}) { __typename } }')
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and "representations[0]" in error["message"]
