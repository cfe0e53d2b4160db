"""Limits: each refused with a clear LIMIT_EXCEEDED error, and the introspection / GraphiQL switches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.limits import ApiLimits
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, Api, api_for, settings_for

LIMITS = ApiLimits(max_depth=4, max_tokens=60, max_aliases=2, max_query_length=600, max_request_bytes=2_000)


@pytest.fixture
async def tight(engine: AsyncEngine) -> AsyncIterator[Api]:
    api = api_for(engine, limits=LIMITS)
    async with api.client:
        yield api


def _only_error(body: dict[str, Any]) -> dict[str, Any]:
    errors = body["errors"]
    assert isinstance(errors, list) and len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    return error


async def test_depth(tight: Api) -> None:
    ok = '{ batch(id: "x") { essays { nodes { id } } } }'  # 4 levels
    assert (await tight.post(ok)).json() == {"data": {"batch": None}}
    deep = '{ batch(id: "x") { essays { nodes { batch { id } } } } }'
    error = _only_error((await tight.post(deep)).json())
    assert error["message"] == "Query depth 5 of anonymous operation exceeds the limit of 4 nested fields."
    assert error["extensions"] == {
        "code": "LIMIT_EXCEEDED",
        "limit": 4,
        "correlationId": error["extensions"]["correlationId"],
    }


async def test_depth_counts_fragments_and_ignores_introspection(tight: Api) -> None:
    via_fragment = 'query Q { batch(id: "x") { ...B } } fragment B on Batch { essays { nodes { batch { id } } } }'
    error = _only_error((await tight.post(via_fragment)).json())
    assert error["message"].startswith("Query depth 5 of Q exceeds")
    introspection = "{ __schema { types { fields { type { ofType { ofType { name } } } } } } }"
    assert "errors" not in (await tight.post(introspection)).json()


async def test_introspection_bombs_are_bounded_in_development(api: Api) -> None:
    # Where introspection is on (development): types' fields' types' fields … nested past graphql-core's
    # introspection depth rule, and more aliased copies of the whole schema than the alias limit.
    nested = "{ __schema { types { " + "fields { type { " * 6 + "name" + " } }" * 6 + " } } }"
    error = _only_error((await api.post(nested)).json())
    assert (error["message"], error["extensions"]["code"]) == ("Maximum introspection depth exceeded", "BAD_USER_INPUT")
    copies = " ".join(f"s{i}: __schema {{ types {{ name fields {{ name }} }} }}" for i in range(31))
    error = _only_error((await api.post("{ " + copies + " }")).json())
    assert (error["message"], error["extensions"]["code"]) == (
        "Query uses 31 aliases; the limit is 30.",
        "LIMIT_EXCEEDED",
    )


async def test_aliases(tight: Api) -> None:
    two = '{ a: batch(id: "1") { id } b: batch(id: "2") { id } }'
    assert "errors" not in (await tight.post(two)).json()
    three = """query { a: batch(id: "1") { id } b: batch(id: "2") { id } ...F }
    fragment F on Query { c: essay(id: "3") { id } }"""
    error = _only_error((await tight.post(three)).json())
    assert error["message"] == "Query uses 3 aliases; the limit is 2."
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED"


async def test_tokens(tight: Api) -> None:
    many = "{ " + " ".join(f"f{i}: __typename" for i in range(20)) + " }"
    error = _only_error((await tight.post(many)).json())
    assert error["message"] == "Query has more than 60 tokens, the limit."
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED"
    # A real syntax error stays a syntax error.
    broken = _only_error((await tight.post("{ batch(id: ")).json())
    assert broken["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Syntax Error" in broken["message"]


async def test_query_length(tight: Api) -> None:
    padded = "{ __typename }" + " " * 700
    error = _only_error((await tight.post(padded)).json())
    assert error["message"] == f"Query is {len(padded)} characters long; the limit is 600."
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED"


async def test_request_body_size(tight: Api) -> None:
    response = await tight.post("{ __typename }", variables={"padding": "x" * 3_000})
    assert response.status_code == 413
    error = _only_error(response.json())
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED"
    assert error["message"] == "Request body exceeds the limit of 2000 bytes."


async def test_page_sizes(api: Api, gen2: None) -> None:
    too_many = await api.errors("{ batches(first: 101) { totalCount } }")
    assert too_many[0]["message"] == "`first` is 101, above the limit of 100 batches per page."
    assert too_many[0]["extensions"]["code"] == "LIMIT_EXCEEDED"
    assert too_many[0]["extensions"]["limit"] == 100
    essays = await api.errors(
        "query($id: ID!) { batch(id: $id) { essays(first: 1001) { totalCount } } }", {"id": FIXTURE_BATCH}
    )
    assert essays[0]["message"] == "`first` is 1001, above the limit of 1000 essays per page."
    assert essays[0]["path"] == ["batch", "essays"]
    negative = await api.errors("{ batches(first: -1) { totalCount } }")
    assert negative[0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_page_size_limit_comes_from_settings(engine: AsyncEngine) -> None:
    api = api_for(engine, settings=settings_for(max_page_size=5))
    async with api.client:
        errors = await api.errors("{ batches(first: 6) { totalCount } }")
    assert errors[0]["message"] == "`first` is 6, above the limit of 5 batches per page."


async def test_introspection_switch(engine: AsyncEngine) -> None:
    query = "{ __schema { queryType { name } } }"
    on = api_for(engine, settings=settings_for(environment="development"))
    off = api_for(engine, settings=settings_for(environment="production"))
    async with on.client, off.client:
        assert await on.data(query) == {"__schema": {"queryType": {"name": "Query"}}}
        error = _only_error((await off.post(query)).json())
        assert error["extensions"]["code"] == "FORBIDDEN"
        assert "Introspection is disabled" in error["message"]
        assert await off.data("{ __typename }") == {"__typename": "Query"}


async def test_graphiql_switch(engine: AsyncEngine) -> None:
    browser = {"Accept": "text/html"}
    on = api_for(engine, settings=settings_for(environment="development"))
    off = api_for(engine, settings=settings_for(environment="production"))
    forced = api_for(engine, settings=settings_for(environment="production", graphiql_enabled=True))
    async with on.client, off.client, forced.client:
        assert (await on.client.get("/graphql", headers=browser)).status_code == 200
        assert (await forced.client.get("/graphql", headers=browser)).status_code == 200
        refused = await off.client.get("/graphql", headers=browser)
        assert refused.status_code == 404
        assert refused.json()["errors"][0]["message"] == "GraphiQL is disabled on this server (RAS_GRAPHIQL_ENABLED)."
        assert (await off.client.get("/graphiql/graphiql.min.js")).status_code == 404
        # Queries still work with GraphiQL off.
        answered = await off.client.get("/graphql", params={"query": "{ __typename }"}, headers=AUTH)
        assert answered.json() == {"data": {"__typename": "Query"}}
