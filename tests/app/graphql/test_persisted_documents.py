"""Persisted documents (RAS_DOCUMENTS, app/graphql/persisted.py), each rule through the real endpoint, PostgreSQL and
Redis: Apollo's APQ protocol (`apq`), trusted documents only (`trusted`), and neither (`off`)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import graphql
import httpx
import orjson
import pytest
import strawberry.schema.schema
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import QueryCache
from app.graphql.media import GRAPHQL_RESPONSE
from app.main import create_app
from db import documents
from infra import cache_keys as ck
from infra.settings import Settings
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, settings_for
from tests.helpers.cache import cache_settings

QUERY = "query Batch($id: ID!) { batch(id: $id) { id } }"
VARIABLES = {"id": FIXTURE_BATCH}
ANSWER = {"batch": {"id": FIXTURE_BATCH}}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apq(document_id: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": document_id}}


@dataclass
class Service:
    """One API process: its client, and what it stores in."""

    http: httpx.AsyncClient
    settings: Settings
    engine: AsyncEngine
    redis: Redis

    async def post(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post("/graphql", json=body, headers={**AUTH, **(headers or {})})

    async def get(self, params: dict[str, str]) -> httpx.Response:
        return await self.http.get("/graphql", params=params, headers={**AUTH, "Accept": "*/*"})

    async def stored(self, document_id: str) -> documents.StoredDocument | None:
        async with self.engine.connect() as conn:
            return await documents.find(conn, document_id)

    async def trust(self, *texts: str) -> None:
        async with self.engine.begin() as conn:
            await documents.add_trusted(conn, [documents.NewDocument(sha256(text), text) for text in texts])

    async def in_redis(self, document_id: str) -> bytes | None:
        value = await self.redis.get(ck.CacheLayout(self.settings.cache_prefix).document(document_id))
        assert value is None or isinstance(value, bytes)
        return value


Start = Callable[..., Any]


@pytest.fixture
async def service(engine: AsyncEngine, redis_url: str, gen2: None) -> AsyncIterator[Start]:
    """Starts API processes (each a `create_app` of its own, with the result cache) on one database and Redis."""
    redis = Redis.from_url(redis_url)
    prefix = cache_settings(redis_url).cache_prefix
    opened: list[tuple[httpx.AsyncClient, QueryCache]] = []

    async def start(mode: str = "apq", cached: bool = True) -> Service:
        settings = cache_settings(
            redis_url,
            cache_prefix=prefix,
            internal_api_key=settings_for().internal_api_key,
            environment="development",
            documents=mode,
        )
        cache = QueryCache(ck.connect(settings), settings)
        app = create_app(settings, engine, cache=cache if cached else None)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test")
        opened.append((http, cache))
        return Service(http, settings, engine, redis)

    yield start
    for http, cache in opened:
        await http.aclose()
        await cache.aclose()
    await redis.aclose()


def only_error(response: httpx.Response) -> dict[str, Any]:
    [error] = response.json()["errors"]
    assert isinstance(error, dict)
    return error


# --- apq -------------------------------------------------------------------------------------------------------------


async def test_apq_unknown_id_then_registration_then_the_id_alone(service: Start) -> None:
    api = await service()
    document_id = sha256(QUERY)
    unknown = await api.post({"extensions": apq(document_id), "variables": VARIABLES})
    assert unknown.status_code == 200
    error = only_error(unknown)
    assert error["message"] == "PersistedQueryNotFound"
    assert error["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert await api.stored(document_id) is None

    registered = await api.post({"query": QUERY, "extensions": apq(document_id), "variables": VARIABLES})
    assert registered.json()["data"] == ANSWER
    row = await api.stored(document_id)
    assert row is not None and row.body == QUERY and not row.trusted
    assert await api.in_redis(document_id) == b"a" + QUERY.encode()

    by_id = await api.post({"extensions": apq(document_id), "variables": VARIABLES})
    assert by_id.json()["data"] == ANSWER
    over_get = await api.get(
        {"extensions": orjson.dumps(apq(document_id)).decode(), "variables": orjson.dumps(VARIABLES).decode()}
    )
    assert over_get.status_code == 200
    assert over_get.json()["data"] == ANSWER  # not GraphiQL's page, though the GET has no query
    document_id_form = await api.post({"documentId": f"sha256:{document_id}", "variables": VARIABLES})
    assert document_id_form.json()["data"] == ANSWER


async def test_apq_unknown_id_under_graphql_response_json_is_a_400(service: Start) -> None:
    api = await service()
    response = await api.post({"extensions": apq(sha256(QUERY))}, {"Accept": GRAPHQL_RESPONSE})
    assert response.status_code == 400
    assert "data" not in response.json()
    assert only_error(response)["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


async def test_a_hash_that_does_not_match_its_query_is_refused_and_not_registered(service: Start) -> None:
    api = await service()
    other = sha256(QUERY + " ")
    response = await api.post({"query": QUERY, "extensions": apq(other), "variables": VARIABLES})
    assert response.status_code == 400
    error = only_error(response)
    assert error["message"] == "provided sha does not match query"
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert await api.stored(other) is None
    assert await api.stored(sha256(QUERY)) is None
    mismatched_forms = await api.post({"query": QUERY, "documentId": f"sha256:{other}"})
    assert only_error(mismatched_forms)["message"] == "provided sha does not match query"


@pytest.mark.parametrize(
    "extensions",
    [
        {"persistedQuery": {"version": 2, "sha256Hash": "ab" * 32}},
        {"persistedQuery": {"version": 1, "sha256Hash": "abc"}},
        {"persistedQuery": {"version": 1}},
        {"persistedQuery": "ab" * 32},
    ],
)
async def test_a_malformed_persisted_query_is_a_400(service: Start, extensions: dict[str, Any]) -> None:
    api = await service()
    response = await api.post({"extensions": extensions})
    assert response.status_code == 400
    assert only_error(response)["message"].startswith("`extensions.persistedQuery` must be")


async def test_a_document_that_does_not_validate_is_not_registered(service: Start) -> None:
    api = await service()
    invalid = "{ nope }"
    response = await api.post({"query": invalid, "extensions": apq(sha256(invalid))})
    assert only_error(response)["extensions"]["code"] == "BAD_USER_INPUT"
    assert await api.stored(sha256(invalid)) is None
    assert await api.in_redis(sha256(invalid)) is None


async def test_another_process_finds_a_registration_in_redis_or_else_postgresql(service: Start) -> None:
    first = await service()
    document_id = sha256(QUERY)
    await first.post({"query": QUERY, "extensions": apq(document_id), "variables": VARIABLES})
    second = await service(cached=False)  # nothing in its memory, no cached result to answer from
    assert (await second.post({"extensions": apq(document_id), "variables": VARIABLES})).json()["data"] == ANSWER
    await first.redis.delete(ck.CacheLayout(first.settings.cache_prefix).document(document_id))
    third = await service()  # with Redis (the cache's); other variables, so no cached result answers
    other = await third.post({"extensions": apq(document_id), "variables": {"id": "another"}})
    assert other.json()["data"] == {"batch": None}
    assert await third.in_redis(document_id) == b"a" + QUERY.encode()  # written back from PostgreSQL


async def test_a_text_in_redis_that_is_not_its_ids_is_ignored(service: Start) -> None:
    first = await service()
    document_id = sha256(QUERY)
    await first.post({"query": QUERY, "extensions": apq(document_id), "variables": VARIABLES})
    key = ck.CacheLayout(first.settings.cache_prefix).document(document_id)
    await first.redis.set(key, b"t{ projection { quarantinedCount } }")
    second = await service(cached=False)
    assert (await second.post({"extensions": apq(document_id), "variables": VARIABLES})).json()["data"] == ANSWER


async def test_a_document_named_by_id_is_answered_from_the_cache(service: Start) -> None:
    api = await service()
    document_id = sha256(QUERY)
    await api.post({"query": QUERY, "extensions": apq(document_id), "variables": VARIABLES})
    first = await api.post({"extensions": apq(document_id), "variables": VARIABLES})
    second = await api.post({"extensions": apq(document_id), "variables": VARIABLES})
    assert [first.json()["extensions"]["cache"]["status"], second.json()["extensions"]["cache"]["status"]] == [
        "hit",
        "hit",
    ]  # the registration's own answer was stored under the id
    assert second.json()["data"] == ANSWER


async def test_a_document_is_parsed_and_validated_once(service: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"parse": 0, "validate": 0}

    def counting(what: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[what] += 1
            return function(*args, **kwargs)

        return wrapper

    api = await service(cached=False)  # every request executes
    # Counted from here: building the schema parsed its executor's start-up probe.
    monkeypatch.setattr(strawberry.schema.schema, "parse", counting("parse", graphql.parse))
    # Strawberry's ValidationCache wraps its validate_document once per process: count graphql-core's validate.
    monkeypatch.setattr(strawberry.schema.schema, "validate", counting("validate", graphql.validate))
    document_id = sha256(QUERY)
    await api.post({"query": QUERY, "extensions": apq(document_id), "variables": VARIABLES})
    for _ in range(5):
        response = await api.post({"extensions": apq(document_id), "variables": VARIABLES})
        assert response.json()["data"] == ANSWER
    assert calls == {"parse": 1, "validate": 1}


# --- trusted ---------------------------------------------------------------------------------------------------------


async def test_trusted_runs_trusted_documents_by_id_or_by_text(service: Start) -> None:
    api = await service("trusted")
    await api.trust(QUERY)
    by_id = await api.post({"extensions": apq(sha256(QUERY)), "variables": VARIABLES})
    assert by_id.json()["data"] == ANSWER
    by_text = await api.post({"query": QUERY, "variables": VARIABLES})
    assert by_text.json()["data"] == ANSWER
    by_document_id = await api.post({"documentId": f"sha256:{sha256(QUERY)}", "variables": VARIABLES})
    assert by_document_id.json()["data"] == ANSWER


async def test_trusted_refuses_everything_else_and_registers_nothing(service: Start) -> None:
    api = await service("trusted")
    await api.trust(QUERY)
    other = "{ batches { totalCount } }"
    text = await api.post({"query": other})
    error = only_error(text)
    assert error["extensions"]["code"] == "DOCUMENT_NOT_TRUSTED"
    assert f"sha256:{sha256(other)}" in error["message"] and "ras documents add" in error["message"]
    unknown_id = await api.post({"extensions": apq(sha256(other))})
    assert only_error(unknown_id)["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert "RAS_DOCUMENTS=trusted" in only_error(unknown_id)["message"]
    registration = await api.post({"query": other, "extensions": apq(sha256(other))})
    assert only_error(registration)["extensions"]["code"] == "DOCUMENT_NOT_TRUSTED"
    assert await api.stored(sha256(other)) is None
    respaced = await api.post({"query": QUERY + "\n", "variables": VARIABLES})  # not the trusted text
    assert only_error(respaced)["extensions"]["code"] == "DOCUMENT_NOT_TRUSTED"
    forbidden = await api.post({"query": other}, {"Accept": GRAPHQL_RESPONSE})
    assert forbidden.status_code == 403


async def test_trusted_does_not_run_apq_registrations(service: Start) -> None:
    open_mode = await service("apq")
    await open_mode.post({"query": QUERY, "extensions": apq(sha256(QUERY)), "variables": VARIABLES})
    trusted = await service("trusted")
    response = await trusted.post({"extensions": apq(sha256(QUERY)), "variables": VARIABLES})
    assert only_error(response)["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    await trusted.trust(QUERY)  # taken at once, without a restart
    again = await trusted.post({"extensions": apq(sha256(QUERY)), "variables": VARIABLES})
    assert again.json()["data"] == ANSWER
    row = await trusted.stored(sha256(QUERY))
    assert row is not None and row.trusted


async def test_a_result_cached_in_apq_mode_is_not_served_in_trusted_mode(service: Start) -> None:
    open_mode = await service("apq")
    document_id = sha256(QUERY)
    await open_mode.post({"query": QUERY, "extensions": apq(document_id), "variables": VARIABLES})
    assert (await open_mode.post({"extensions": apq(document_id), "variables": VARIABLES})).json()["extensions"][
        "cache"
    ]["status"] == "hit"
    trusted = await service("trusted")
    response = await trusted.post({"extensions": apq(document_id), "variables": VARIABLES})
    assert only_error(response)["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


# --- off -------------------------------------------------------------------------------------------------------------


async def test_off_refuses_persisted_queries_and_runs_queries(service: Start) -> None:
    api = await service("off")
    by_id = await api.post({"extensions": apq(sha256(QUERY))})
    assert only_error(by_id)["message"] == "PersistedQueryNotSupported"
    assert only_error(by_id)["extensions"]["code"] == "PERSISTED_QUERY_NOT_SUPPORTED"
    with_text = await api.post({"query": QUERY, "extensions": apq(sha256(QUERY)), "variables": VARIABLES})
    assert only_error(with_text)["extensions"]["code"] == "PERSISTED_QUERY_NOT_SUPPORTED"
    assert await api.stored(sha256(QUERY)) is None
    plain = await api.post({"query": QUERY, "variables": VARIABLES})
    assert plain.json()["data"] == ANSWER
