"""Unhandled request shapes (SECURITY.md, finding 7), over real HTTP against uvicorn.

The attack: a JSON body that is a number, null or a string gave a plain-text 500, a traceback in the log and a dropped
keep-alive connection; variables nested a few hundred levels deep, even unused, gave INTERNAL (a RecursionError).
Each shape below is a 400 with the documented error JSON (BAD_USER_INPUT and the response's correlation id), nothing
is logged at error level, and the same connection then answers an ordinary query.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from app.graphql.operation import MAX_VARIABLES_DEPTH
from app.main import create_app
from tests.app.graphql.conftest import AUTH, settings_for
from tests.app.graphql.served import served

JSON_HEADERS = {**AUTH, "Content-Type": "application/json"}


def _nested(levels: int) -> str:
    """JSON text of lists `levels` deep (orjson cannot write more than 254 levels)."""
    return "[" * levels + "]" * levels


def _with_variables(query: str, value: str) -> bytes:
    return b'{"query": %s, "variables": {"v": %s}}' % (orjson.dumps(query), value.encode())


# (what, body, the message's start)
BODIES: list[tuple[str, bytes, str]] = [
    ("a number", b"123", "The request body must be a JSON object holding `query`; got a number."),
    ("null", b"null", "The request body must be a JSON object holding `query`; got null."),
    ("a string", b'"x"', "The request body must be a JSON object holding `query`; got a string."),
    ("a boolean", b"true", "The request body must be a JSON object holding `query`; got a boolean."),
    ("an empty array", b"[]", "Batching is not enabled"),
    ("an array of operations", b'[{"query": "{ __typename }"}]', "Batching is not enabled"),
    ("invalid UTF-8", b'{"query": "{ \xff }"}', "Unable to parse request body as JSON (UTF-8)"),
    ("not JSON", b"{not json", "Unable to parse request body as JSON (UTF-8)"),
    ("nothing", b"", "Unable to parse request body as JSON (UTF-8)"),
    ("no query", b"{}", "No GraphQL query found in the request"),
    ("a number as query", b'{"query": 1}', "The GraphQL operation's `query` must be a string or null, if provided."),
    (
        "variables as a string",
        b'{"query": "{ __typename }", "variables": "x"}',
        "The GraphQL operation's `variables` must be an object or null, if provided.",
    ),
    (
        "variables as an array",
        b'{"query": "{ __typename }", "variables": [1]}',
        "The GraphQL operation's `variables` must be an object or null, if provided.",
    ),
    (
        "extensions as a number",
        b'{"query": "{ __typename }", "extensions": 1}',
        "The GraphQL operation's `extensions` must be an object or null, if provided.",
    ),
    (
        "extensions as a string",
        b'{"query": "{ __typename }", "extensions": "x"}',
        "The GraphQL operation's `extensions` must be an object or null, if provided.",
    ),
    (
        "operationName as an object",
        b'{"query": "{ __typename }", "operationName": {"a": 1}}',
        "The GraphQL operation's `operationName` must be a string or null, if provided.",
    ),
    (
        "unused variables 400 levels deep",
        _with_variables("{ __typename }", _nested(400)),
        f"`variables` are nested {MAX_VARIABLES_DEPTH + 1} levels deep; the limit is {MAX_VARIABLES_DEPTH}.",
    ),
    (
        "used variables 400 levels deep",
        _with_variables("query($v: ID) { batch(id: $v) { id } }", _nested(400)),
        f"`variables` are nested {MAX_VARIABLES_DEPTH + 1} levels deep; the limit is {MAX_VARIABLES_DEPTH}.",
    ),
]

# (what, GET query parameters, the message's start)
PARAMETERS: list[tuple[str, dict[str, str], str]] = [
    ("variables not JSON", {"query": "{ __typename }", "variables": "{x"}, "The `variables` parameter is not JSON"),
    (
        "variables as an array",
        {"query": "{ __typename }", "variables": "[1]"},
        "The GraphQL operation's `variables` must be an object or null, if provided.",
    ),
    (
        "extensions as a number",
        {"query": "{ __typename }", "extensions": "1"},
        "The GraphQL operation's `extensions` must be an object or null, if provided.",
    ),
    (
        "variables 400 levels deep",
        {"query": "{ __typename }", "variables": '{"v": ' + _nested(400) + "}"},
        f"`variables` are nested {MAX_VARIABLES_DEPTH + 1} levels deep; the limit is {MAX_VARIABLES_DEPTH}.",
    ),
    ("no query", {"operationName": "Q"}, "No GraphQL query found in the request"),
]


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """One keep-alive connection to a real server: every request of a test goes over the same one if it survives."""
    async with served(create_app(settings_for(), engine)) as url:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
            yield http


def _local_port(response: httpx.Response) -> int:
    """The client's port of the connection that carried `response`: equal ports, the same connection."""
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


def _assert_refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    correlation = response.headers["X-Correlation-ID"]
    [error] = response.json()["errors"]
    assert set(response.json()) == {"errors"}
    assert error["message"].startswith(message), error["message"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "correlationId": correlation}


async def _assert_usable(client: httpx.AsyncClient, before: httpx.Response) -> None:
    after = await client.post("/graphql", json={"query": "{ __typename }"}, headers=AUTH)
    assert after.json() == {"data": {"__typename": "Query"}}
    assert _local_port(after) == _local_port(before)  # the refusal did not cost the connection


@pytest.mark.parametrize(("what", "body", "message"), BODIES, ids=[what for what, _, _ in BODIES])
async def test_a_posted_body_of_any_shape_is_a_400_and_the_connection_stays(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, what: str, body: bytes, message: str
) -> None:
    caplog.set_level(logging.ERROR)
    with capture_logs() as logs:
        response = await client.post("/graphql", content=body, headers=JSON_HEADERS)
    _assert_refused(response, message)
    assert [entry for entry in logs if entry["log_level"] == "error"] == []
    assert caplog.records == []  # uvicorn logs an exception escaping the app at ERROR
    await _assert_usable(client, response)


@pytest.mark.parametrize(("what", "params", "message"), PARAMETERS, ids=[what for what, _, _ in PARAMETERS])
async def test_get_parameters_of_any_shape_are_a_400_and_the_connection_stays(
    client: httpx.AsyncClient, what: str, params: dict[str, str], message: str
) -> None:
    response = await client.get("/graphql", params=params, headers={**AUTH, "Accept": "application/json"})
    _assert_refused(response, message)
    await _assert_usable(client, response)


async def test_a_post_without_a_json_content_type_is_a_400(client: httpx.AsyncClient) -> None:
    for headers in (AUTH, {**AUTH, "Content-Type": "text/plain"}):
        response = await client.post("/graphql", content=b'{"query": "{ __typename }"}', headers=headers)
        _assert_refused(response, "Unsupported content type")
    await _assert_usable(client, response)


async def test_variables_at_the_depth_limit_still_run(client: httpx.AsyncClient) -> None:
    # `_nested(n)` is n lists deep inside the variables object, itself one level.
    body = _with_variables("{ __typename }", _nested(MAX_VARIABLES_DEPTH - 1))
    response = await client.post("/graphql", content=body, headers=JSON_HEADERS)
    assert response.json() == {"data": {"__typename": "Query"}}
