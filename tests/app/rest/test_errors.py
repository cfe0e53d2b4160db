"""Errors: authentication, X-User-ID scoping, parameters, unknown batches and routes, internal failures.

Every error body keeps the original's `error` message and adds `error_code`, `message` and `correlation_id`;
every response echoes X-Correlation-ID.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from app.main import create_app
from db import reads
from tests.app.graphql.conftest import API_KEY, AUTH, FIXTURE_BATCH, FIXTURE_USER, SERVICE_ID, settings_for
from tests.app.rest.conftest import Rest, client_for
from tests.app.rest.test_openapi import LIST_ROUTE, STATUS_ROUTE, validate
from tests.helpers.cache import Delta
from tests.helpers.documented import check_error

STATUS = f"/batches/{FIXTURE_BATCH}/status"
LIST = f"/batches/user/{FIXTURE_USER}"


def _refused(response: Any, status: int, error: str, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    correlation = response.headers["X-Correlation-ID"]
    body: dict[str, Any] = response.json()
    check_error(body, error, code, correlation)
    assert "ETag" not in response.headers
    return body


@pytest.mark.parametrize("path", [STATUS, LIST, "/no/such/route"])
@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "Missing authentication"),
        ({"X-Internal-API-Key": API_KEY}, "Missing authentication"),
        ({"X-Service-ID": SERVICE_ID}, "Missing authentication"),
        ({"X-Internal-API-Key": "", "X-Service-ID": SERVICE_ID}, "Missing authentication"),
        ({"X-Internal-API-Key": "wrong", "X-Service-ID": SERVICE_ID}, "Invalid credentials"),
        ({"X-Internal-API-Key": API_KEY, "X-Service-ID": "unknown-service"}, "Invalid credentials"),
        ({"X-Internal-API-Key": API_KEY + "x", "X-Service-ID": "unknown-service"}, "Invalid credentials"),
        ({**AUTH, "X-User-ID": "  "}, "Empty X-User-ID"),
    ],
)
async def test_credentials_are_required(api: Rest, gen2: None, path: str, headers: dict[str, str], error: str) -> None:
    body = _refused(await api.get(path, headers=headers), 401, error, "UNAUTHENTICATED")
    assert FIXTURE_BATCH not in body["message"]


async def test_unknown_batch_is_404(api: Rest, gen2: None) -> None:
    _refused(await api.get("/batches/no-such-batch/status"), 404, "Batch not found", "BATCH_NOT_FOUND")


async def test_another_users_batch_is_404_like_an_unknown_one(api: Rest, gen2: None) -> None:
    own = await api.get(STATUS, user=FIXTURE_USER)
    assert own.status_code == 200
    other = _refused(await api.get(STATUS, user="someone-else"), 404, "Batch not found", "BATCH_NOT_FOUND")
    unknown = _refused(
        await api.get("/batches/nope/status", user="someone-else"), 404, "Batch not found", "BATCH_NOT_FOUND"
    )
    assert other["message"].replace(FIXTURE_BATCH, "nope") == unknown["message"]  # nothing tells them apart


async def test_listing_another_users_batches_is_403(api: Rest, gen2: None) -> None:
    assert (await api.get(LIST, user=FIXTURE_USER)).status_code == 200
    body = _refused(await api.get(LIST, user="someone-else"), 403, "Forbidden", "FORBIDDEN")
    assert "X-User-ID" in body["message"]
    # The service itself (no X-User-ID) may list anyone's batches.
    assert len((await api.json(LIST))["batches"]) == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit must be between 1 and 100"),
        ({"limit": "101"}, "limit must be between 1 and 100"),
        ({"limit": "-5"}, "limit must be between 1 and 100"),
        ({"limit": "ten"}, "limit must be an integer; got 'ten'"),
        ({"limit": "2.5"}, "limit must be an integer; got '2.5'"),
        ({"limit": " 5"}, "limit must be an integer; got ' 5'"),
        ({"limit": "9" * 40}, "limit must be an integer"),
        ({"offset": "-1"}, "offset must be between 0 and 2147483647"),
        ({"offset": "2147483648"}, "offset must be between 0 and 2147483647"),
        ({"offset": "x"}, "offset must be an integer; got 'x'"),
        ({"status": "COMPLETED_SUCCESSFULLY"}, "status must be one of the internal BatchStatus values"),
        ({"status": "completed"}, "status must be one of the internal BatchStatus values"),
        ({"status": "archived_by_newer_platform"}, "status must be one of the internal BatchStatus values"),
        ([("limit", "5"), ("limit", "6")], "limit must be given at most once"),
        ([("status", "cancelled"), ("status", "failed_critically")], "status must be given at most once"),
    ],
)
async def test_invalid_list_parameters_are_400(
    api: Rest, params: dict[str, str] | list[tuple[str, str]], message: str
) -> None:
    body = _refused(await api.get(LIST, params=params), 400, "Invalid parameters", "INVALID_PARAMETER")
    assert body["message"].startswith(message), body["message"]


async def test_status_message_lists_what_is_accepted(api: Rest) -> None:
    body = _refused(await api.get(LIST, params={"status": "nope"}), 400, "Invalid parameters", "INVALID_PARAMETER")
    assert "guest_class_ready" in body["message"] and "student_validation_completed" in body["message"]


async def test_empty_and_unknown_parameters_are_ignored(api: Rest, gen2: None) -> None:
    # An empty value is an absent one (the original's `if status:`); unknown names were always ignored.
    listed = await api.json(LIST, params={"limit": "", "offset": "", "status": "", "sort": "whatever"})
    assert listed["pagination"] == {"limit": 20, "offset": 0, "total": 1}


async def test_overlong_ids_are_400(api: Rest) -> None:
    _refused(await api.get(f"/batches/{'b' * 257}/status"), 400, "Invalid batch ID", "INVALID_PARAMETER")
    _refused(await api.get(f"/batches/user/{'u' * 257}"), 400, "Invalid parameters", "INVALID_PARAMETER")
    # 256 characters is a valid id that simply does not exist.
    _refused(await api.get(f"/batches/{'b' * 256}/status"), 404, "Batch not found", "BATCH_NOT_FOUND")


async def test_unknown_routes_and_methods_get_json_errors(api: Rest) -> None:
    _refused(await api.get("/batches"), 404, "Not found", "NOT_FOUND")
    _refused(await api.get(f"/batches/{FIXTURE_BATCH}"), 404, "Not found", "NOT_FOUND")
    response = await api.client.post(f"/internal/v1{STATUS}", headers=AUTH)
    _refused(response, 405, "Method not allowed", "METHOD_NOT_ALLOWED")
    assert response.headers["Allow"] == "GET, HEAD"
    _refused(
        await api.client.delete(f"/internal/v1{LIST}", headers=AUTH), 405, "Method not allowed", "METHOD_NOT_ALLOWED"
    )


async def test_head_answers_like_get_without_a_body(api: Rest, gen2: None) -> None:
    get = await api.get(STATUS)
    head = await api.client.head(f"/internal/v1{STATUS}", headers=AUTH)
    assert head.status_code == 200
    assert head.headers["ETag"] == get.headers["ETag"]


async def test_a_callers_correlation_id_is_echoed_when_plain(api: Rest, gen2: None) -> None:
    for path, status in [(STATUS, 200), ("/batches/nope/status", 404), (LIST + "?limit=0", 400)]:
        response = await api.get(path, headers={**AUTH, "X-Correlation-ID": "gw-123.abc:7"})
        assert response.status_code == status
        assert response.headers["X-Correlation-ID"] == "gw-123.abc:7"
        if status != 200:
            assert response.json()["correlation_id"] == "gw-123.abc:7"
    missing = await api.get(STATUS, headers={"X-Correlation-ID": "gw-401"})
    assert missing.headers["X-Correlation-ID"] == "gw-401" and missing.json()["correlation_id"] == "gw-401"
    unsafe = await api.get("/batches/nope/status", headers={**AUTH, "X-Correlation-ID": "<script>"})
    generated = unsafe.headers["X-Correlation-ID"]
    assert generated != "<script>" and len(generated) == 36  # a fresh uuid4
    assert unsafe.json()["correlation_id"] == generated


async def test_internal_failure_is_500_masked_logged_and_correlated(
    api: Rest, gen2: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("password=hunter2 leaked in a driver message")

    monkeypatch.setattr(reads, "batch_with_essays", broken)
    with capture_logs() as logs:
        response = await api.get(STATUS, headers={**AUTH, "X-Correlation-ID": "gw-500"})
    body = _refused(response, 500, "Internal server error", "INTERNAL_ERROR")
    assert "hunter2" not in response.text
    assert "gw-500" in body["message"]
    [logged] = [entry for entry in logs if entry["event"] == "rest.internal_error"]
    assert logged["correlation_id"] == "gw-500"
    assert logged["log_level"] == "error"
    assert "hunter2" in logged["error"]
    assert isinstance(logged["exc_info"], RuntimeError)


async def test_requests_are_counted_by_route_and_status(api: Rest, gen2: None) -> None:
    delta = Delta()
    await api.get(STATUS)
    await api.get("/batches/nope/status")
    await api.get(LIST, params={"limit": "0"})
    await api.get(LIST, headers={})
    assert delta("ras_api_requests_total", endpoint="rest", operation="get_batch_status", status_code="200") == 1
    assert delta("ras_api_requests_total", endpoint="rest", operation="get_batch_status", status_code="404") == 1
    assert delta("ras_api_requests_total", endpoint="rest", operation="get_user_batches", status_code="400") == 1
    assert delta("ras_api_requests_total", endpoint="rest", operation="get_user_batches", status_code="401") == 1
    assert delta("ras_api_request_duration_seconds_count", endpoint="rest", operation="get_batch_status") == 2


async def test_an_unreachable_database_is_a_retryable_503() -> None:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # nothing listens on port 9
    client = client_for(create_app(settings_for(), engine))
    try:
        async with client.client:
            # The first three fail on the connection; then the breaker is open and requests fail without trying.
            for path, route in [(STATUS, STATUS_ROUTE), (LIST, LIST_ROUTE)] * 2:
                response = await client.get(path)
                body = _refused(response, 503, "Service unavailable", "SERVICE_UNAVAILABLE")
                assert response.headers["Retry-After"] == "2"
                assert "retry" in body["message"]
                validate(route, 503, body)
    finally:
        await engine.dispose()
