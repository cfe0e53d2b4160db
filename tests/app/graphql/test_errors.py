"""Error bodies: codes and correlation ids on every error, internal failures masked and logged."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from structlog.testing import capture_logs

from db import reads
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, Api, api_for


async def test_internal_failure_is_masked_logged_and_correlated(
    api: Api, gen2: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("password=hunter2 leaked in a driver message")

    monkeypatch.setattr(reads, "essays_by_id", broken)
    query = 'query($b: ID!) { batch(id: $b) { id } essay(id: "x") { id } }'
    with capture_logs() as logs:
        response = await api.post(query, {"b": FIXTURE_BATCH})
    body = response.json()
    assert body["data"] == {"batch": {"id": FIXTURE_BATCH}, "essay": None}  # the rest of the query still answers
    [error] = body["errors"]
    correlation = response.headers["X-Correlation-ID"]
    assert error["extensions"] == {"code": "INTERNAL", "correlationId": correlation}
    assert "hunter2" not in response.text
    assert correlation in error["message"]
    assert error["path"] == ["essay"]
    [logged] = [entry for entry in logs if entry["event"] == "graphql.internal_error"]
    assert logged["correlation_id"] == correlation
    assert logged["log_level"] == "error"
    assert "hunter2" in logged["error"]


async def test_a_callers_correlation_id_is_kept_when_plain(api: Api) -> None:
    kept = await api.post("{ nope }", headers={**AUTH, "X-Correlation-ID": "gw-123.abc"})
    assert kept.headers["X-Correlation-ID"] == "gw-123.abc"
    assert kept.json()["errors"][0]["extensions"]["correlationId"] == "gw-123.abc"
    replaced = await api.post("{ __typename }", headers={**AUTH, "X-Correlation-ID": "<script>"})
    made = uuid.UUID(replaced.headers["X-Correlation-ID"])
    assert str(made) == replaced.headers["X-Correlation-ID"] and made.version == 4 and made.variant == uuid.RFC_4122


async def test_invalid_queries_are_bad_user_input(api: Api) -> None:
    unknown_field = (await api.post('{ batch(id: "x") { nope } }')).json()
    assert unknown_field["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "nope" in unknown_field["errors"][0]["message"]
    wrong_variable = (await api.post("query($f: Int) { batches(first: $f) { totalCount } }", {"f": "ten"})).json()
    assert wrong_variable["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    wrong_enum = (await api.post("{ batches(status: [NOT_A_STATUS]) { totalCount } }")).json()
    assert wrong_enum["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_malformed_http_requests_get_graphql_shaped_errors(api: Api) -> None:
    not_json = await api.client.post(
        "/graphql", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    no_query = await api.client.post("/graphql", json={}, headers=AUTH)
    assert no_query.status_code == 400
    assert no_query.json()["errors"][0]["message"] == "No GraphQL query found in the request"
    batch = await api.client.post("/graphql", json=[{"query": "{ __typename }"}], headers=AUTH)
    assert batch.status_code == 400
    assert batch.json()["errors"][0]["message"] == "Batching is not enabled"
    put = await api.client.put("/graphql", json={"query": "{ __typename }"}, headers=AUTH)
    assert put.status_code == 405
    assert put.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


async def test_requests_that_wait_out_the_pool_get_a_retryable_503_and_the_breaker_stays_closed(
    engine: AsyncEngine, gen2: None
) -> None:
    """Overload, not an outage: every pooled connection busy past the pool's timeout. Those requests are told to
    retry (SERVICE_UNAVAILABLE, HTTP 503) instead of getting a masked INTERNAL error, and they do not open the
    breaker (three failures would): once a connection is free, the next request is served."""
    small = create_async_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    api = api_for(small)
    query = "query($b: ID!) { batch(id: $b) { id } }"
    try:
        async with api.client:
            async with small.connect():  # the pool's only connection, held
                for _ in range(3):
                    response = await api.post(query, {"b": FIXTURE_BATCH})
                    assert response.status_code == 503 and response.headers["Retry-After"]
                    [error] = response.json()["errors"]
                    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE" and "retry" in error["message"]
            assert await api.data(query, {"b": FIXTURE_BATCH}) == {"batch": {"id": FIXTURE_BATCH}}
    finally:
        await small.dispose()
