"""The API traced into memory: a request continues the caller's trace, with spans for the cache lookup, parsing,
validation, execution, each loader and its statements, and its errors carry the trace id; untraced, nothing of it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import QueryCache
from app.main import create_app
from infra.tracing import Tracing
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, settings_for
from tests.app.live.conftest import BATCH_PROGRESS, live_api, live_settings, ws_client
from tests.helpers.cache import cache_settings
from tests.helpers.events import fixture_messages, project
from tests.helpers.tracing import PARENT_ID, TRACE_ID, TRACEPARENT, children, descendants, hex_id, in_memory, tree

SCREEN = """
query Screen($id: ID!) {
  batch(id: $id) { id status essays(first: 10) { totalCount nodes { id } } }
}
"""
TRACED = {**AUTH, "traceparent": TRACEPARENT}


@pytest.fixture
def traced() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    with in_memory("ras-api") as pair:
        yield pair


async def _client(engine: AsyncEngine, redis_url: str, tracing: Tracing | None) -> httpx.AsyncClient:
    tracer = tracing.tracer("app.cache") if tracing is not None else None
    cache = QueryCache.from_settings(cache_settings(redis_url), tracer)
    app = create_app(settings_for(), engine, cache=cache, tracing=tracing)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test")


@pytest.fixture
async def client(
    engine: AsyncEngine, redis_url: str, traced: tuple[Tracing, InMemorySpanExporter]
) -> AsyncIterator[httpx.AsyncClient]:
    await project(engine, fixture_messages("gen2"))
    async with await _client(engine, redis_url, traced[0]) as client:
        yield client


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in\n{tree(spans)}"
    return found[0]


def _screen(variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"query": SCREEN, "variables": variables or {"id": FIXTURE_BATCH}}


async def test_a_query_continues_the_callers_trace(
    client: httpx.AsyncClient, traced: tuple[Tracing, InMemorySpanExporter]
) -> None:
    exporter = traced[1]
    response = await client.post("/graphql", json=_screen(), headers=TRACED)
    assert response.status_code == 200, response.text
    assert "errors" not in response.json()
    spans = list(exporter.get_finished_spans())
    shown = tree(spans)

    request = _one(spans, "POST /graphql")
    assert request.kind is SpanKind.SERVER
    assert hex_id(request.context.trace_id, 32) == TRACE_ID, shown
    assert request.parent is not None and hex_id(request.parent.span_id, 16) == PARENT_ID, shown
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 200
    assert all(hex_id(span.context.trace_id, 32) == TRACE_ID for span in spans), shown

    lookup = _one(spans, "cache lookup")
    assert lookup in children(spans, request), shown
    assert lookup.attributes is not None and lookup.attributes["ras.cache.hit"] is False
    operation = _one(spans, "GraphQL Query: Screen")
    assert operation in children(spans, request), shown
    steps = {span.name for span in children(spans, operation)}
    assert {"GraphQL Parsing", "GraphQL Validation", "GraphQL Execution"} <= steps, shown

    execution = _one(spans, "GraphQL Execution")
    loaders = [span for span in descendants(spans, execution) if span.name.startswith("load ")]
    assert {span.name for span in loaders} >= {"load batch", "load essays"}, shown
    for loader in loaders:
        statements = [span for span in children(spans, loader) if span.kind is SpanKind.CLIENT]
        assert any(span.name == "SELECT" for span in statements), shown
        assert all("db.statement" in (span.attributes or {}) for span in statements), shown


async def test_a_cache_hit_is_only_its_lookup(
    client: httpx.AsyncClient, traced: tuple[Tracing, InMemorySpanExporter]
) -> None:
    exporter = traced[1]
    first = await client.post("/graphql", json=_screen(), headers=TRACED)
    exporter.clear()
    again = await client.post("/graphql", json=_screen(), headers=TRACED)
    assert again.json()["extensions"]["cache"]["status"] == "hit", again.text
    assert orjson.loads(first.content)["data"] == again.json()["data"]
    spans = list(exporter.get_finished_spans())
    request = _one(spans, "POST /graphql")
    lookup = _one(spans, "cache lookup")
    assert lookup.attributes is not None and lookup.attributes["ras.cache.hit"] is True
    assert descendants(spans, request) == [lookup], tree(spans)


async def test_errors_carry_the_trace_id(client: httpx.AsyncClient) -> None:
    graphql = await client.post("/graphql", json={"query": "{ nope }"}, headers=TRACED)
    (error,) = graphql.json()["errors"]
    assert error["extensions"]["traceId"] == TRACE_ID
    refused = await client.post(
        "/graphql", json={"query": "{ batches { totalCount } }"}, headers={"traceparent": TRACEPARENT}
    )
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["extensions"]["traceId"] == TRACE_ID
    rest = await client.get("/internal/v1/batches/unknown-batch/status", headers=TRACED)
    assert rest.status_code == 404
    assert rest.json()["trace_id"] == TRACE_ID


async def test_rest_requests_are_named_by_their_route(
    client: httpx.AsyncClient, traced: tuple[Tracing, InMemorySpanExporter]
) -> None:
    response = await client.get(f"/internal/v1/batches/{FIXTURE_BATCH}/status", headers=TRACED)
    assert response.status_code == 200, response.text
    spans = list(traced[1].get_finished_spans())
    request = _one(spans, "GET /internal/v1/batches/{batch_id}/status")
    assert (
        request.attributes is not None and request.attributes["http.route"] == "/internal/v1/batches/{batch_id}/status"
    )
    names = {span.name for span in descendants(spans, request)}
    assert names >= {"cache lookup", "load batch_with_essays"}, tree(spans)


async def test_a_malformed_traceparent_starts_a_trace_of_our_own(
    client: httpx.AsyncClient, traced: tuple[Tracing, InMemorySpanExporter]
) -> None:
    for value in ("garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", TRACEPARENT + "-extra"):
        response = await client.post("/graphql", json=_screen(), headers={**AUTH, "traceparent": value})
        assert response.status_code == 200, response.text
    requests = [span for span in traced[1].get_finished_spans() if span.name == "POST /graphql"]
    assert len(requests) == 3
    assert all(span.parent is None and hex_id(span.context.trace_id, 32) != TRACE_ID for span in requests)


async def test_subscriptions_are_served_and_not_traced(
    engine: AsyncEngine, database_url: str, redis_url: str, traced: tuple[Tracing, InMemorySpanExporter]
) -> None:
    await project(engine, fixture_messages("gen2"))
    settings = live_settings(database_url, redis_url, f"ras-trace-{uuid.uuid4().hex[:10]}")
    async with live_api(settings, engine, traced[0]) as api, ws_client(api.ws_url) as ws:
        await ws.subscribe("1", BATCH_PROGRESS, {"id": FIXTURE_BATCH})
        first = await ws.next_payload("1")
    assert first["data"]["batchProgress"]["id"] == FIXTURE_BATCH, first
    assert traced[1].get_finished_spans() == (), tree(traced[1].get_finished_spans())


async def test_probes_are_not_traced(client: httpx.AsyncClient, traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        await client.get(path, headers={"traceparent": TRACEPARENT})
    assert traced[1].get_finished_spans() == (), tree(traced[1].get_finished_spans())


async def test_untraced_the_answers_are_the_same_bytes_and_no_span_is_made(
    engine: AsyncEngine, redis_url: str, traced: tuple[Tracing, InMemorySpanExporter]
) -> None:
    """The app built without tracing, while a tracing exists in the process (its statement instrumentation on):
    the app makes no span, so its statements have no parent and none is exported."""
    await project(engine, fixture_messages("gen2"))
    async with await _client(engine, redis_url, None) as off, await _client(engine, redis_url, traced[0]) as on:
        for body in (_screen(), {"query": "{ nope }"}, _screen({"id": "unknown"})):
            untraced = await off.post("/graphql", json=body, headers=TRACED)
            assert traced[1].get_finished_spans() == (), tree(traced[1].get_finished_spans())
            traced_answer = await on.post("/graphql", json=body, headers=TRACED)
            assert traced[1].get_finished_spans(), "the traced app made spans"
            traced[1].clear()
            if "errors" in untraced.json():
                assert "traceId" not in untraced.text
                continue
            assert untraced.content == traced_answer.content
