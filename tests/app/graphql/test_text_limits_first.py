"""Long queries parsed before the limits (SECURITY.md, finding 3).

The attack: above 20,000 characters the cache key ran `print_ast(parse(query))` before the length and token limits
refused the query, so a 62 KB query cost about a second of CPU and four senders stalled /healthz for seconds. Now a
text over either limit is refused with LIMIT_EXCEEDED before anything parses it: no call reaches graphql-core's
parser (wherever it is called from: the cache key, Strawberry, the document limits) nor the cache key, over POST and
GET, with the cache and without.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import graphql
import graphql.language.parser
import httpx
import pytest
import strawberry.schema.schema
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

import app.cache
import app.graphql.keys
from app.cache import QueryCache
from app.limits import ApiLimits
from app.main import create_app
from infra import cache_keys as ck
from tests.app.graphql.conftest import AUTH, settings_for
from tests.helpers.cache import cache_settings

LIMITS = ApiLimits()
# A valid query above the length limit (the finding sent 62 KB; a GET's URL must stay within what clients send).
LONG = "{ " + " ".join(f"a{i}: __typename" for i in range(1_800)) + " }"
# Within the length limit, above the token limit (2,000).
MANY_TOKENS = "{ " + " ".join(f"a{i}: __typename" for i in range(1_100)) + " }"


@dataclass
class Calls:
    """Calls of the parser and of the cache key, counted by wrappers around every name they are called by."""

    parse: int = 0
    key: int = 0

    def counting(self, what: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            setattr(self, what, getattr(self, what) + 1)
            return function(*args, **kwargs)

        return wrapper


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    counted = Calls()
    for module in (graphql, graphql.language.parser, strawberry.schema.schema, app.cache):
        monkeypatch.setattr(module, "parse", counted.counting("parse", module.parse))
    monkeypatch.setattr(app.graphql.keys, "graphql_cache_key", counted.counting("key", app.cache.graphql_cache_key))
    return counted


@dataclass
class Subject:
    app: Starlette
    cached: bool


@pytest.fixture(params=["uncached", "cached"])
async def subject(request: pytest.FixtureRequest, engine: AsyncEngine, redis_url: str) -> AsyncIterator[Subject]:
    if request.param == "uncached":
        yield Subject(create_app(settings_for(), engine, LIMITS), cached=False)
        return
    settings = cache_settings(redis_url, internal_api_key=settings_for().internal_api_key, environment="development")
    cache = QueryCache(ck.connect(settings), settings)
    yield Subject(create_app(settings, engine, LIMITS, cache=cache), cached=True)
    await cache.aclose()


async def _send(app: Starlette, method: str, query: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client:
        if method == "POST":
            return await client.post("/graphql", json={"query": query}, headers=AUTH)
        return await client.get("/graphql", params={"query": query}, headers=AUTH)


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_query_over_the_length_limit_is_refused_unparsed(subject: Subject, calls: Calls, method: str) -> None:
    assert len(LONG) > LIMITS.max_query_length
    response = await _send(subject.app, method, LONG)
    assert response.status_code == 200  # application/json: refused as an operation, as before
    [error] = response.json()["errors"]
    assert error["message"] == f"Query is {len(LONG)} characters long; the limit is {LIMITS.max_query_length}."
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED"
    assert error["extensions"]["limit"] == LIMITS.max_query_length
    assert (calls.parse, calls.key) == (0, 0)


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_query_over_the_token_limit_is_refused_unparsed(subject: Subject, calls: Calls, method: str) -> None:
    assert len(MANY_TOKENS) <= LIMITS.max_query_length
    response = await _send(subject.app, method, MANY_TOKENS)
    [error] = response.json()["errors"]
    assert error["message"] == f"Query has more than {LIMITS.max_tokens} tokens, the limit."
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED"
    assert (calls.parse, calls.key) == (0, 0)


async def test_a_query_within_the_limits_is_keyed_and_parsed(subject: Subject, calls: Calls) -> None:
    """The counters see the calls they are meant to: an ordinary query reaches the parser (and, cached, the key)."""
    response = await _send(subject.app, "POST", "{ a: __typename }")
    assert response.json()["data"] == {"a": "Query"}
    assert calls.parse >= 1
    assert calls.key == (1 if subject.cached else 0)
