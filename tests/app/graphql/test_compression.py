"""gzip on /graphql (POST and GET, cache hit and miss, uncached answers), on GraphiQL's page and files: as
Accept-Encoding prefers, from RAS_COMPRESSION_MIN_BYTES on, with Vary: Accept-Encoding, and a cached answer compressed
once per process whatever the number of hits (counted, not timed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app import graphiql
from app.main import create_app
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, FIXTURE_USER, compressing_cached_client, settings_for
from tests.helpers.cache import Delta
from tests.helpers.compression import COMPRESSIONS, MEMO_HITS, fetch_raw, gunzipped

QUERY = dict(graphiql.example_queries())["2-batch-detail"]  # the gateway's batch screen
VARIABLES = {"batchId": FIXTURE_BATCH}
GZIP = {"Accept-Encoding": "gzip"}


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test")


@pytest.fixture
async def cached(engine: AsyncEngine, redis_url: str, gen2: None) -> AsyncIterator[httpx.AsyncClient]:
    async with compressing_cached_client(engine, redis_url) as client:
        yield client


async def ask(client: httpx.AsyncClient, method: str, encoding: str | None) -> tuple[httpx.Response, bytes]:
    headers = {**AUTH, "X-User-ID": FIXTURE_USER} | ({} if encoding is None else {"Accept-Encoding": encoding})
    if method == "GET":
        params = {"query": QUERY, "variables": orjson.dumps(VARIABLES).decode()}
        return await fetch_raw(client, "GET", "/graphql", params=params, headers=headers)
    return await fetch_raw(client, "POST", "/graphql", json={"query": QUERY, "variables": VARIABLES}, headers=headers)


def cache_status(document: bytes) -> str:
    status: str = orjson.loads(document)["extensions"]["cache"]["status"]
    return status


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_hits_are_gzipped_from_one_compression(cached: httpx.AsyncClient, method: str) -> None:
    plain_response, plain = await ask(cached, method, "identity")  # the miss that stores the entry
    assert "content-encoding" not in plain_response.headers and cache_status(plain) == "miss"
    delta = Delta()
    answers = [await ask(cached, method, "gzip") for _ in range(3)]
    for response, raw in answers:
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["vary"] == "Accept-Encoding"
        assert int(response.headers["content-length"]) == len(raw)
        document = gunzipped(raw)
        assert cache_status(document) == "hit"
        assert orjson.loads(document)["data"] == orjson.loads(plain)["data"]
    # The first gzip hit compressed the stored bytes; the others only framed them with their own extensions.cache.
    assert delta(COMPRESSIONS, what="cached") == 1
    assert delta(MEMO_HITS) == 2
    assert delta(COMPRESSIONS, what="response") == 0


async def test_a_stored_miss_fills_the_memo_for_the_hits(cached: httpx.AsyncClient) -> None:
    delta = Delta()
    statuses = [cache_status(gunzipped((await ask(cached, "POST", "gzip"))[1])) for _ in range(2)]
    assert statuses == ["miss", "hit"]
    assert (delta(COMPRESSIONS, what="cached"), delta(MEMO_HITS)) == (1, 1)


@pytest.mark.parametrize("encoding", [None, "", "identity", "gzip;q=0", "gzip;q=0.5, identity", "br"])
async def test_identity_unless_gzip_is_preferred(cached: httpx.AsyncClient, encoding: str | None) -> None:
    await ask(cached, "POST", "identity")
    client = cached
    if encoding is None:
        del client.headers["accept-encoding"]  # httpx sends one of its own otherwise
    response, raw = await ask(client, "POST", encoding)
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"
    assert cache_status(raw) == "hit" and orjson.loads(raw)["data"]["batch"]["id"] == FIXTURE_BATCH


async def test_below_the_threshold_and_when_off_nothing_is_compressed(engine: AsyncEngine, gen2: None) -> None:
    async with client_for(create_app(settings_for(compression_min_bytes=1_000_000), engine)) as client:
        response, raw = await ask(client, "POST", "gzip")
        assert "content-encoding" not in response.headers and response.headers["vary"] == "Accept-Encoding"
        assert orjson.loads(raw)["data"]["batch"]["id"] == FIXTURE_BATCH
    async with client_for(create_app(settings_for(compression_enabled=False, compression_min_bytes=0), engine)) as c:
        response, raw = await ask(c, "POST", "gzip")
        assert "content-encoding" not in response.headers and "vary" not in response.headers
        assert orjson.loads(raw)["data"]["batch"]["id"] == FIXTURE_BATCH


async def test_uncached_answers_and_errors_are_compressed_as_sent(engine: AsyncEngine, gen2: None) -> None:
    async with client_for(create_app(settings_for(compression_min_bytes=0), engine)) as client:
        delta = Delta()
        response, raw = await ask(client, "POST", "gzip")  # no cache at all: compressed for this response
        assert response.headers["content-encoding"] == "gzip"
        assert orjson.loads(gunzipped(raw))["data"]["batch"]["id"] == FIXTURE_BATCH
        refused, raw = await fetch_raw(client, "POST", "/graphql", json={"query": "{"}, headers={**AUTH, **GZIP})
        assert refused.headers["content-encoding"] == "gzip" and refused.headers["vary"] == "Accept-Encoding"
        assert orjson.loads(gunzipped(raw))["errors"]
        assert delta(COMPRESSIONS, what="response") == 2 and delta(COMPRESSIONS, what="cached") == 0


async def test_graphiql_page_and_files_are_gzipped_once(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphiql, "_gzipped", {})  # this process may have compressed them in an earlier test
    async with client_for(create_app(settings_for(), engine)) as client:
        page, raw = await fetch_raw(client, "GET", "/graphql", headers={"Accept": "text/html", **GZIP})
        assert page.headers["content-encoding"] == "gzip" and b"ras-graphiql-config" in gunzipped(raw)
        assert page.headers["vary"] == "Accept-Encoding"
        url = f"{graphiql.ASSET_PATH}/graphiql.min.js"
        delta = Delta()
        for _ in range(2):
            response, raw = await fetch_raw(client, "GET", url, headers=GZIP)
            assert response.headers["content-encoding"] == "gzip" and response.headers["vary"] == "Accept-Encoding"
            assert gunzipped(raw) == graphiql.assets()["graphiql.min.js"].body
        assert delta(COMPRESSIONS, what="asset") == 1
        head, _ = await fetch_raw(client, "HEAD", url, headers=GZIP)
        assert (head.headers["content-encoding"], head.headers["content-length"]) == ("gzip", str(len(raw)))
        plain, raw = await fetch_raw(client, "GET", url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and raw == graphiql.assets()["graphiql.min.js"].body
        small, raw = await fetch_raw(client, "GET", f"{graphiql.ASSET_PATH}/ras-graphiql.css", headers=GZIP)
        assert "content-encoding" not in small.headers, "327 bytes: under the default threshold"
        assert small.headers["vary"] == "Accept-Encoding"
