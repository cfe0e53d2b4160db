"""REST path tricks and method games, written byte for byte on a raw socket to a real uvicorn (an HTTP client would
normalise `..`, `//` and the method before sending).

Whatever the path or method, the answer is one of this API's JSON errors or the exact route's document: a path never
reaches another route or another id than the one it spells, dot segments are not resolved, an id that is not UTF-8
or holds a NUL is refused, and every method but GET and HEAD is a JSON 405.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, FIXTURE_USER, settings_for
from tests.app.graphql.served import served
from tests.helpers.events import fixture_messages, project

# A hang guard only: uvicorn answers in milliseconds.
ANSWER_TIMEOUT_SECONDS = 30.0
STATUS = f"/internal/v1/batches/{FIXTURE_BATCH}/status"

# (what, request target, status, the body's `error`)
PATHS = [
    ("dot segments to the real id", f"/internal/v1/batches/other/../{FIXTURE_BATCH}/status", 404, "Not found"),
    ("encoded dot segments", f"/internal/v1/batches/other/%2e%2e/{FIXTURE_BATCH}/status", 404, "Not found"),
    ("an encoded slash in the id", f"/internal/v1/batches/{FIXTURE_BATCH}%2Fx/status", 404, "Not found"),
    ("a double slash", f"/internal/v1//batches/{FIXTURE_BATCH}/status", 404, "Not found"),
    ("a trailing slash", STATUS + "/", 404, "Not found"),
    ("the prefix in capitals", STATUS.replace("/internal/v1", "/INTERNAL/V1"), 404, None),
    ("a NUL in the batch id", "/internal/v1/batches/%00/status", 400, "Invalid batch ID"),
    ("a batch id that is not UTF-8", "/internal/v1/batches/%FF/status", 400, "Invalid batch ID"),
    ("an overlong UTF-8 slash", "/internal/v1/batches/%C0%AF/status", 400, "Invalid batch ID"),
    ("a NUL in the user id", "/internal/v1/batches/user/%00", 400, "Invalid parameters"),
    ("a user id that is not UTF-8", f"/internal/v1/batches/user/{FIXTURE_USER}%FF", 400, "Invalid parameters"),
    ("the user list with a batch id's shape", f"/internal/v1/batches/user/{FIXTURE_USER}/status", 404, "Not found"),
    ("a query string on the status route", STATUS + "?user_id=someone-else&batch_id=x", 200, None),
]
METHODS = ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "MKCOL", "PURGE"]


@pytest.fixture
async def base_url(engine: AsyncEngine) -> AsyncIterator[str]:
    await project(engine, fixture_messages("gen2"))
    async with served(create_app(settings_for(), engine)) as url:
        yield url


async def raw_request(base_url: str, method: str, target: str, headers: dict[str, str]) -> httpx.Response:
    """One request written as given (no normalisation), read back as a response."""
    url = httpx.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: {url.host}\r\nContent-Length: 0\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), ANSWER_TIMEOUT_SECONDS)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    header_block, _, body = rest.partition(b"\r\n\r\n")
    lines = [line.split(b":", 1) for line in header_block.split(b"\r\n")]
    response_headers = [(name.strip(), value.strip()) for name, value in lines]
    return httpx.Response(int(status_line.split()[1]), headers=response_headers, content=body)


async def test_a_path_reaches_only_the_route_and_id_it_spells(base_url: str) -> None:
    for what, target, status, error in PATHS:
        response = await raw_request(base_url, "GET", target, AUTH)
        assert response.status_code == status, (what, response.text)
        if status == 200:
            assert response.json()["batch_id"] == FIXTURE_BATCH, what  # the query string changed nothing
            continue
        if error is None:  # outside the prefix: Starlette's own 404
            assert response.content == b"Not Found", what
            continue
        body = orjson.loads(response.content)
        # An error and nothing else: no document of the batch behind the trick.
        assert set(body) == {"error", "error_code", "message", "correlation_id"}, (what, body)
        assert body["error"] == error, (what, body)
        assert body["correlation_id"] == response.headers["X-Correlation-ID"], what


async def test_every_method_but_get_and_head_is_a_json_405(base_url: str) -> None:
    targets = (STATUS, f"/internal/v1/batches/user/{FIXTURE_USER}", "/internal/v1/openapi.json")
    for method, target in itertools.product(METHODS, targets):
        response = await raw_request(base_url, method, target, AUTH)
        assert response.status_code == 405, (method, target, response.text)
        assert response.headers["Allow"] == "GET, HEAD"
        body = orjson.loads(response.content)
        assert (body["error"], body["error_code"]) == ("Method not allowed", "METHOD_NOT_ALLOWED")
        assert set(body) == {"error", "error_code", "message", "correlation_id"}
