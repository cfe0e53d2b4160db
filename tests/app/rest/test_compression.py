"""gzip on the REST routes: as Accept-Encoding prefers, an ETag per representation, 304s and HEAD that agree with the
GET they stand for, Vary: Accept-Encoding on every answer, and a cached body compressed once per process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import body_digest
from app.main import create_app
from app.rest import routes as rest
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, FIXTURE_USER, compressing_cached_client, settings_for
from tests.helpers.cache import Delta
from tests.helpers.compression import COMPRESSIONS, MEMO_HITS, fetch_raw, gunzipped

STATUS = f"{rest.PREFIX}/batches/{FIXTURE_BATCH}/status"
LIST = f"{rest.PREFIX}/batches/user/{FIXTURE_USER}"
GZIP = {**AUTH, "Accept-Encoding": "gzip"}
IDENTITY = {**AUTH, "Accept-Encoding": "identity"}


def client_for(engine: AsyncEngine, **settings: object) -> httpx.AsyncClient:
    app = create_app(settings_for(compression_min_bytes=0, **settings), engine)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test")


@pytest.fixture
async def cached(engine: AsyncEngine, redis_url: str, gen2: None) -> AsyncIterator[httpx.AsyncClient]:
    async with compressing_cached_client(engine, redis_url) as client:
        yield client


@pytest.mark.parametrize("path", [STATUS, LIST])
async def test_hits_are_gzipped_from_one_compression(cached: httpx.AsyncClient, path: str) -> None:
    plain, plain_body = await fetch_raw(cached, "GET", path, headers=IDENTITY)  # the miss that stores the entry
    assert plain.headers["etag"] == f'"{body_digest(plain_body)}"' and "content-encoding" not in plain.headers
    delta = Delta()
    for _ in range(3):
        response, raw = await fetch_raw(cached, "GET", path, headers=GZIP)
        assert (response.status_code, response.headers["x-cache"]) == (200, "hit")
        assert response.headers["content-encoding"] == "gzip" and response.headers["vary"] == "Accept-Encoding"
        assert response.headers["etag"] == f'"{body_digest(plain_body)}-gzip"'
        assert gunzipped(raw) == plain_body
    assert (delta(COMPRESSIONS, what="cached"), delta(MEMO_HITS), delta(COMPRESSIONS, what="response")) == (1, 2, 0)


async def test_each_representation_has_its_own_etag_and_304(cached: httpx.AsyncClient) -> None:
    gzipped, _ = await fetch_raw(cached, "GET", STATUS, headers=GZIP)
    plain, _ = await fetch_raw(cached, "GET", STATUS, headers=IDENTITY)
    gzip_tag, plain_tag = gzipped.headers["etag"], plain.headers["etag"]
    assert gzip_tag != plain_tag
    for headers, tag in ((GZIP, gzip_tag), (IDENTITY, plain_tag)):
        response, raw = await fetch_raw(cached, "GET", STATUS, headers={**headers, "If-None-Match": tag})
        assert (response.status_code, raw) == (304, b"")
        assert response.headers["etag"] == tag and response.headers["vary"] == "Accept-Encoding"
        assert "content-encoding" not in response.headers
    # The other representation's tag does not stand for this one: the body is sent.
    other, raw = await fetch_raw(cached, "GET", STATUS, headers={**GZIP, "If-None-Match": plain_tag})
    assert (other.status_code, other.headers["etag"]) == (200, gzip_tag) and gunzipped(raw)


async def test_head_answers_as_get_would(cached: httpx.AsyncClient) -> None:
    get, raw = await fetch_raw(cached, "GET", LIST, headers=GZIP)
    head, _ = await fetch_raw(cached, "HEAD", LIST, headers=GZIP)
    assert head.status_code == 200
    for name in ("content-encoding", "etag", "vary", "content-type"):
        assert head.headers[name] == get.headers[name], name
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(raw))


async def test_without_a_cache_bodies_are_compressed_as_sent(engine: AsyncEngine, gen2: None) -> None:
    async with client_for(engine) as client:
        delta = Delta()
        response, raw = await fetch_raw(client, "GET", STATUS, headers=GZIP)
        assert response.headers["x-cache"] == "bypass" and response.headers["content-encoding"] == "gzip"
        assert response.headers["etag"] == f'"{body_digest(gunzipped(raw))}-gzip"'
        assert (delta(COMPRESSIONS, what="response"), delta(COMPRESSIONS, what="cached")) == (1, 0)


@pytest.mark.parametrize("encoding", ["identity", "gzip;q=0", "*;q=0.5, gzip;q=0.1"])
async def test_identity_unless_gzip_is_preferred(cached: httpx.AsyncClient, encoding: str) -> None:
    response, raw = await fetch_raw(cached, "GET", STATUS, headers={**AUTH, "Accept-Encoding": encoding})
    assert "content-encoding" not in response.headers and response.headers["vary"] == "Accept-Encoding"
    assert response.headers["etag"] == f'"{body_digest(raw)}"'


async def test_errors_vary_too_and_off_means_neither(engine: AsyncEngine) -> None:
    async with client_for(engine) as client:
        missing, raw = await fetch_raw(client, "GET", f"{rest.PREFIX}/batches/nope/status", headers=GZIP)
        assert missing.status_code == 404 and missing.headers["vary"] == "Accept-Encoding"
        assert b"BATCH_NOT_FOUND" in gunzipped(raw)
    async with client_for(engine, compression_enabled=False) as client:
        missing, raw = await fetch_raw(client, "GET", f"{rest.PREFIX}/batches/nope/status", headers=GZIP)
        assert "vary" not in missing.headers and "content-encoding" not in missing.headers
        assert b"BATCH_NOT_FOUND" in raw
