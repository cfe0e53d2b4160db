"""The two response media types of GraphQL over HTTP: `application/graphql-response+json` when the Accept header
asks for it, with the specification's status codes (a request error is a 4xx without `data`; an executed result is
a 200, field errors included), and `application/json` with the legacy 200s for every other client. Cache hits carry
the type their own request asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import QueryCache
from app.graphql.media import GRAPHQL_RESPONSE, JSON, negotiated
from app.limits import ApiLimits
from app.main import create_app
from infra import cache_keys as ck
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, Api, api_for, settings_for
from tests.helpers.cache import cache_settings

NEW = {**AUTH, "Accept": GRAPHQL_RESPONSE}
LEGACY = {**AUTH, "Accept": JSON}


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("", JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        ("application/*", JSON),
        ("text/html", JSON),  # nothing acceptable named: the default, as the specification allows
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", JSON),
        (f"*/*, {GRAPHQL_RESPONSE};q=0.1", JSON),
        (f"{GRAPHQL_RESPONSE};q=0", JSON),
        ("Application/GraphQL-Response+JSON; charset=utf-8", GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE};q=nonsense", JSON),
    ],
)
def test_accept_negotiation(accept: str, chosen: str) -> None:
    assert negotiated(accept) == chosen


async def _post(api: Api, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return await api.client.post("/graphql", json=body, headers=headers)


DEEP = '{ batch(id: "x") { ' + "essays { nodes { batch { " * 5 + "id" + " } } }" * 5 + " } }"
NODES = (
    "{ "
    + " ".join(f"a{i}: batches(first: 100) {{ nodes {{ essays(first: 1000) {{ totalCount }} }} }}" for i in range(2))
    + " }"
)

REQUEST_ERRORS = [
    ("parse error", {"query": "{"}, "BAD_USER_INPUT"),
    ("validation error", {"query": "{ nope }"}, "BAD_USER_INPUT"),
    (
        "variable coercion",
        {"query": "query($f: Int) { batches(first: $f) { totalCount } }", "variables": {"f": "x"}},
        "BAD_USER_INPUT",
    ),
    (
        "depth limit",
        {"query": DEEP},
        "LIMIT_EXCEEDED",
    ),
    ("length limit", {"query": "{ __typename }" + " " * 20_000}, "LIMIT_EXCEEDED"),
    (
        "node limit",
        {"query": NODES},
        "LIMIT_EXCEEDED",
    ),
]


@pytest.mark.parametrize(("what", "body", "code"), REQUEST_ERRORS, ids=[what for what, _, _ in REQUEST_ERRORS])
async def test_a_request_error_is_a_400_without_data_and_a_legacy_200(
    api: Api, what: str, body: dict[str, Any], code: str
) -> None:
    new = await _post(api, body, NEW)
    assert new.status_code == 400, new.text
    assert new.headers["content-type"] == GRAPHQL_RESPONSE
    assert "data" not in new.json()
    assert new.json()["errors"][0]["extensions"]["code"] == code
    legacy = await _post(api, body, LEGACY)
    assert legacy.status_code == 200
    assert legacy.headers["content-type"] == JSON
    assert legacy.json()["data"] is None
    assert legacy.json()["errors"][0]["extensions"]["code"] == code


async def test_an_executed_result_with_field_errors_is_a_200(api: Api) -> None:
    # `batches` is non-null: its error nulls the whole `data`, which is still an executed result.
    new = await _post(api, {"query": "{ batches(first: -1) { totalCount } }"}, NEW)
    assert new.status_code == 200
    assert new.headers["content-type"] == GRAPHQL_RESPONSE
    assert new.json()["data"] is None
    assert new.json()["errors"][0]["path"] == ["batches"]
    partial = await _post(api, {"query": '{ batch(id: "x") { id } batches(first: -1) { totalCount } }'}, NEW)
    assert partial.status_code == 200


async def test_refusals_before_graphql_carry_the_type_asked_for(api: Api) -> None:
    unauthenticated = await api.client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Accept": GRAPHQL_RESPONSE}
    )
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["content-type"] == GRAPHQL_RESPONSE
    malformed = await api.client.post("/graphql", content=b"123", headers={**NEW, "Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == GRAPHQL_RESPONSE
    unknown_operation = await _post(api, {"query": "query A { __typename }", "operationName": "B"}, NEW)
    assert unknown_operation.status_code == 400
    assert unknown_operation.headers["content-type"] == GRAPHQL_RESPONSE
    mutation_over_get = await api.client.get("/graphql", params={"query": "mutation { x }"}, headers=NEW)
    assert mutation_over_get.status_code == 400
    assert mutation_over_get.headers["content-type"] == GRAPHQL_RESPONSE


async def test_introspection_when_it_is_off_is_a_403(engine: AsyncEngine) -> None:
    api = api_for(engine, limits=ApiLimits(introspection=False, graphiql=False))
    async with api.client:
        new = await _post(api, {"query": "{ __schema { queryType { name } } }"}, NEW)
        assert new.status_code == 403
        assert new.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert "data" not in new.json()


@pytest.fixture
async def cached(engine: AsyncEngine, redis_url: str, gen2: None) -> AsyncIterator[Api]:
    settings = cache_settings(redis_url, internal_api_key=settings_for().internal_api_key, environment="development")
    cache = QueryCache(ck.connect(settings), settings)
    app = create_app(settings, engine, cache=cache)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client:
        yield Api(client)
    await cache.aclose()


@pytest.mark.parametrize(("first", "then"), [(LEGACY, NEW), (NEW, LEGACY)], ids=["json-then-new", "new-then-json"])
async def test_a_cache_hit_carries_the_type_its_request_asked_for(
    cached: Api, first: dict[str, str], then: dict[str, str]
) -> None:
    body = {"query": "query($id: ID!) { batch(id: $id) { id } }", "variables": {"id": FIXTURE_BATCH}}
    miss = await _post(cached, body, first)
    assert miss.json()["extensions"]["cache"]["status"] == "miss"
    assert miss.headers["content-type"] == first["Accept"]
    hit = await _post(cached, body, then)
    assert hit.status_code == 200
    assert hit.json()["extensions"]["cache"]["status"] == "hit"
    assert hit.headers["content-type"] == then["Accept"]
    assert hit.json()["data"] == miss.json()["data"] == {"batch": {"id": FIXTURE_BATCH}}
