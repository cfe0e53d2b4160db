"""Bad queries against a real `ras serve`: each hostile request is refused with a clear status and code and no
data, and an ordinary query right after it still answers. How long each took is reported with the figures, not
asserted (speed lives in bench/); a refusal that never comes is caught by the client's timeout.

The server runs as deployed (RAS_ENVIRONMENT=production: no GraphiQL, no introspection) with the Redis cache on and
a request body limit lowered to 32 KiB, to show that limit is the configured one and not a constant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import figures
from tests.helpers.events import fixture_messages, project, teacher_batches
from tests.resilience.conftest import AUTH, SecurityApi, StartSecurityApi

BODY_LIMIT = 32_768
FIXTURE_BATCH = "7b1f0c52-3d7e-4a51-9a57-5a0f3c1e2b01"
NORMAL = "query Normal($id: ID!) { batch(id: $id) { id status essays { totalCount } } }"
# A hang guard for the raw-socket request only (httpx requests have the client's 30 s): uvicorn answers in
# milliseconds.
ANSWER_TIMEOUT_SECONDS = 30.0

HEAVY_LIST = "batches(first: 100) { nodes { id essays(first: 1000) { nodes { id filename } } } }"


@dataclass(frozen=True)
class Hostile:
    name: str
    send: Callable[[SecurityApi], Awaitable[httpx.Response]]  # one request, as a hostile caller writes it
    status: int
    code: str | None  # the first error's extensions.code; None: not a GraphQL body (the HTTP server answered)
    says: str  # a piece of the error message a caller can act on


Send = Callable[[SecurityApi], Awaitable[httpx.Response]]


def _post(body: Any = None, content: bytes | None = None, content_type: str = "application/json") -> Send:
    async def send(api: SecurityApi) -> httpx.Response:
        headers = {**AUTH, "content-type": content_type}
        if content is not None:
            return await api.client.post("/graphql", content=content, headers=headers)
        return await api.client.post("/graphql", json=body, headers=AUTH)

    return send


def _query(text: str, variables: dict[str, Any] | None = None) -> Send:
    return _post({"query": text, "variables": variables or {}})


async def _chunks(total: int) -> AsyncIterator[bytes]:
    # No Content-Length: the endpoint must count what arrives rather than trust a header.
    yield b'{"query": "'
    for _ in range(total // 65_536):
        yield b"a" * 65_536
    yield b'"}'


def _chunked(api: SecurityApi) -> Awaitable[httpx.Response]:
    return api.client.post(
        "/graphql", content=_chunks(10_000_000), headers={**AUTH, "content-type": "application/json"}
    )


def _huge_get(api: SecurityApi) -> Awaitable[httpx.Response]:
    # 60 KB of query string (httpx stops at 64 KB): the application's query length limit answers.
    return api.client.get("/graphql", params={"query": "{ __typename }" + " " * 60_000}, headers=AUTH)


async def _huge_request_line(api: SecurityApi) -> httpx.Response:
    """A 1 MB GET request line, written on a raw socket (httpx refuses URLs that long): uvicorn's HTTP parser
    answers it before the application is involved."""
    url = httpx.URL(api.base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        target = "/graphql?query=%7B" + "a" * 1_000_000 + "%7D"
        head = f"GET {target} HTTP/1.1\r\nHost: {url.host}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in AUTH.items()) + "\r\n"
        writer.write(head.encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(65_536), ANSWER_TIMEOUT_SECONDS)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return httpx.Response(int(status_line.split()[1]), content=body)


def _graphiql(api: SecurityApi) -> Awaitable[httpx.Response]:
    return api.client.get("/graphql", headers={"Accept": "text/html"})


def _put(api: SecurityApi) -> Awaitable[httpx.Response]:
    return api.client.put("/graphql", json={"query": "{ __typename }"}, headers=AUTH)


def _no_credentials(api: SecurityApi) -> Awaitable[httpx.Response]:
    return api.client.post("/graphql", json={"query": "{ __typename }"})


def _nested(depth: int) -> str:
    """At least `depth` levels: batch → essays → nodes → batch → …, three levels per round through an essay."""
    inner, levels = "id", 1
    while levels < depth:
        inner = f"essays {{ nodes {{ batch {{ {inner} }} }} }}"
        levels += 3
    return f'{{ batch(id: "{FIXTURE_BATCH}") {{ {inner} }} }}'


def _fragment_bomb(body: str) -> str:
    # F30 spreads F29 twice, …: 2^30 copies of F0 if expanded naively.
    fragments = [f"fragment F0 on Query {{ {body} }}"]
    fragments += [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 31)]
    return "query Bomb { ...F30 } " + " ".join(fragments)


HOSTILE = [
    Hostile("nesting 50+ deep", _query(_nested(50)), 200, "LIMIT_EXCEEDED", "exceeds the limit of 12 nested fields"),
    Hostile(
        "1000 aliases",
        _query("{ " + " ".join(f"a{i}: __typename" for i in range(1_000)) + " }"),
        200,
        "LIMIT_EXCEEDED",
        "tokens",
    ),
    Hostile(
        "30 aliased heavy lists",
        _query("{ " + " ".join(f"l{i}: {HEAVY_LIST}" for i in range(30)) + " }"),
        200,
        "LIMIT_EXCEEDED",
        "list items",
    ),
    Hostile(
        "heavy list via variables",
        _query(
            "query($b: Int, $e: Int) { a: batches(first: $b) { nodes { essays(first: $e) { nodes { id } } } } "
            "b: batches(first: $b) { nodes { essays(first: $e) { nodes { id } } } } }",
            {"b": 100, "e": 1_000},
        ),
        200,
        "LIMIT_EXCEEDED",
        "list items",
    ),
    Hostile(
        "fragment bomb (aliases)",
        _query(_fragment_bomb(f'x: batch(id: "{FIXTURE_BATCH}") {{ id }}')),
        200,
        "LIMIT_EXCEEDED",
        "aliases",
    ),
    Hostile("fragment bomb (lists)", _query(_fragment_bomb(HEAVY_LIST)), 200, "LIMIT_EXCEEDED", "list items"),
    Hostile(
        "fragment cycle",
        _query('query { ...A } fragment A on Query { ...B } fragment B on Query { batch(id: "x") { id } ...A }'),
        200,
        "BAD_USER_INPUT",
        "within itself",
    ),
    Hostile(
        "batches(first: 100000)",
        _query("{ batches(first: 100000) { totalCount } }"),
        200,
        "LIMIT_EXCEEDED",
        "above the limit of 100",
    ),
    Hostile(
        "essays(first: 100000)",
        _query(f'{{ batch(id: "{FIXTURE_BATCH}") {{ essays(first: 100000) {{ totalCount }} }} }}'),
        200,
        "LIMIT_EXCEEDED",
        "above the limit of 1000",
    ),
    Hostile(
        "first beyond Int",
        _query("{ batches(first: 99999999999999999999) { totalCount } }"),
        200,
        "BAD_USER_INPUT",
        "32-bit",
    ),
    Hostile(
        "10 MB body",
        _post(content=b'{"query": "' + b"a" * 10_000_000 + b'"}'),
        413,
        "LIMIT_EXCEEDED",
        f"limit of {BODY_LIMIT} bytes",
    ),
    Hostile("10 MB chunked body", _chunked, 413, "LIMIT_EXCEEDED", f"limit of {BODY_LIMIT} bytes"),
    Hostile("malformed JSON", _post(content=b'{"query": "{ __typename }",'), 400, "BAD_USER_INPUT", "JSON"),
    Hostile("JSON nested 16k deep", _post(content=b"[" * 16_000 + b"]" * 16_000), 400, "BAD_USER_INPUT", "JSON"),
    Hostile(
        "variables nested 16k deep",
        _post(content=b'{"query": "{ __typename }", "variables": {"v": ' + b"[" * 16_000 + b"]" * 16_000 + b"}}"),
        400,
        "BAD_USER_INPUT",
        "JSON",
    ),
    Hostile("text/plain", _post(content=b"{ __typename }", content_type="text/plain"), 400, "BAD_USER_INPUT", "type"),
    Hostile(
        "multipart junk",
        _post(
            content=b'--xx\r\nContent-Disposition: form-data; name="operations"\r\n\r\n{junk\r\n--xx--\r\n',
            content_type="multipart/form-data; boundary=xx",
        ),
        400,
        "BAD_USER_INPUT",
        "content type",
    ),
    Hostile(
        "batch of 1000 operations",
        _post([{"query": "{ __typename }"}] * 1_000),
        400,
        "BAD_USER_INPUT",
        "Batching is not enabled",
    ),
    Hostile("GET with a 60 KB query string", _huge_get, 200, "LIMIT_EXCEEDED", "the limit is 20000"),
    Hostile("GET with a 1 MB request line", _huge_request_line, 400, None, "Invalid HTTP request"),
    Hostile(
        "introspection in production",
        _query("{ __schema { types { name } } }"),
        200,
        "FORBIDDEN",
        "Introspection is disabled",
    ),
    Hostile("GraphiQL in production", _graphiql, 404, "NOT_FOUND", "GraphiQL is disabled"),
    Hostile("mutation", _query("mutation { drop }"), 200, "BAD_USER_INPUT", "not supported"),
    Hostile(
        "NUL in an argument",
        _query("query($id: ID!) { batch(id: $id) { id } }", {"id": "x\u0000"}),
        200,
        "BAD_USER_INPUT",
        "NUL",
    ),
    # Both were answered with a plain 500 once the cache was on: the cached path read tags nothing had recorded.
    Hostile("PUT with a JSON body", _put, 405, "METHOD_NOT_ALLOWED", "GET and POST"),
    Hostile(
        "unknown operationName",
        _post({"query": "query A { __typename }", "operationName": "Nope"}),
        400,
        "BAD_USER_INPUT",
        'Unknown operation named "Nope"',
    ),
    Hostile("no credentials", _no_credentials, 401, "UNAUTHENTICATED", "Missing authentication"),
]


async def _normal(api: SecurityApi) -> float:
    started = time.perf_counter()
    response = await api.graphql(NORMAL, {"id": FIXTURE_BATCH})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json()["data"]["batch"]["id"] == FIXTURE_BATCH, response.text
    return elapsed


def _no_values(data: Any) -> bool:
    """Whether a (partial) result holds nothing but nulls: a refused field nulls its parent, it never leaks data."""
    if isinstance(data, dict):
        return all(_no_values(v) for v in data.values())
    return data is None


def _first_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, body
    error: dict[str, Any] = errors[0]
    return error


async def test_hostile_requests_are_refused_clearly_and_the_server_keeps_answering(
    engine: AsyncEngine, security_api_server: StartSecurityApi
) -> None:
    await project(engine, fixture_messages("gen2"))
    # Enough essays that a list query without a node limit is expensive (10,000 essays, 1.7 MB per copy).
    await project(engine, teacher_batches("heavy-teacher", batches=40, essays=50))
    api = await security_api_server(RAS_MAX_REQUEST_BYTES=str(BODY_LIMIT))
    baseline = [await _normal(api) for _ in range(3)]

    rows = []
    lines: list[str] = []
    for hostile in HOSTILE:
        started = time.perf_counter()
        response = await hostile.send(api)
        elapsed = time.perf_counter() - started
        if hostile.code is None:
            code, message = None, response.text
        else:
            error = _first_error(response)
            code, message = error["extensions"].get("code"), error["message"]
            assert error["extensions"].get("correlationId"), "every error can be quoted back to the logs"
            assert _no_values(response.json().get("data")), ("a refused query returns no data", response.text[:300])
        after = await _normal(api)
        rows.append((hostile.name, response.status_code, code, elapsed, after))
        lines.append(
            f"{hostile.name:32} {response.status_code} {code or '-':16} {elapsed * 1000:7.1f} ms"
            f"   next normal query {after * 1000:5.1f} ms   {message[:60]}"
        )
        assert response.status_code == hostile.status, (hostile.name, response.text[:500])
        assert code == hostile.code, (hostile.name, response.text[:500])
        assert hostile.says in message, (hostile.name, message)

    assert api.process.proc.poll() is None, "the server is still running"
    assert "Traceback" not in api.process.output(), api.process.output()[-3000:]
    figures.report(
        "bad-queries",
        *lines,
        hostile_requests=len(rows),
        refused=sum(1 for r in rows if r[1] != 200 or r[2]),
        codes=",".join(sorted({str(r[2] or r[1]) for r in rows})),
        slowest_refusal_ms=round(max(r[3] for r in rows) * 1000, 1),
        median_refusal_ms=round(sorted(r[3] for r in rows)[len(rows) // 2] * 1000, 1),
        normal_query_baseline_ms=round(min(baseline) * 1000, 1),
        slowest_normal_query_after_ms=round(max(r[4] for r in rows) * 1000, 1),
        server_exited=api.process.proc.poll() is not None,
    )


async def test_a_flood_of_hostile_requests_leaves_normal_queries_answered(
    engine: AsyncEngine, security_api_server: StartSecurityApi
) -> None:
    """Hostile requests in parallel with ordinary ones: the ordinary ones keep their answers, none fails."""
    await project(engine, fixture_messages("gen2"))
    api = await security_api_server(RAS_MAX_REQUEST_BYTES=str(BODY_LIMIT))
    senders = [h.send for h in HOSTILE if h.name not in ("10 MB body", "10 MB chunked body")]

    async def hostile_stream() -> int:
        sent = 0
        for _ in range(4):
            for send in senders:
                response = await send(api)
                assert response.status_code in (200, 400, 401, 404, 405, 413)
                sent += 1
        return sent

    async def normal_stream() -> list[float]:
        return [await _normal(api) for _ in range(40)]

    started = time.perf_counter()
    results = await asyncio.gather(*[hostile_stream() for _ in range(4)], *[normal_stream() for _ in range(2)])
    elapsed = time.perf_counter() - started
    hostile_sent = sum(r for r in results if isinstance(r, int))
    latencies = sorted(t for r in results if isinstance(r, list) for t in r)
    assert api.process.proc.poll() is None
    figures.report(
        "bad-queries-flood",
        hostile_requests=hostile_sent,
        normal_queries=len(latencies),
        normal_failed=0,
        normal_p50_ms=round(latencies[len(latencies) // 2] * 1000, 1),
        normal_p95_ms=round(latencies[int(len(latencies) * 0.95)] * 1000, 1),
        duration_s=round(elapsed, 2),
    )
