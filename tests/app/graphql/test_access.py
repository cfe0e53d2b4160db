"""Service authentication (X-Internal-API-Key + X-Service-ID) and X-User-ID scoping."""

from __future__ import annotations

import pytest

from tests.app.graphql.conftest import API_KEY, FIXTURE_BATCH, FIXTURE_USER, SERVICE_ID, Api

QUERY = f'{{ batch(id: "{FIXTURE_BATCH}") {{ id }} }}'
ESSAY = "bb52cb47-ff0d-5c47-86ea-11c46b2b904a"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "Missing authentication"),
        ({"X-Internal-API-Key": API_KEY}, "Missing authentication"),
        ({"X-Service-ID": SERVICE_ID}, "Missing authentication"),
        ({"X-Internal-API-Key": "wrong", "X-Service-ID": SERVICE_ID}, "Invalid credentials"),
        ({"X-Internal-API-Key": API_KEY[:-1], "X-Service-ID": SERVICE_ID}, "Invalid credentials"),
        ({"X-Internal-API-Key": API_KEY, "X-Service-ID": "unknown-service"}, "Invalid credentials"),
        ({"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID, "X-User-ID": " "}, "X-User-ID"),
    ],
)
async def test_refused_with_401_and_a_graphql_error(api: Api, headers: dict[str, str], reason: str) -> None:
    response = await api.post(QUERY, headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert "data" not in body
    [error] = body["errors"]
    assert reason in error["message"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["extensions"]["correlationId"] == response.headers["X-Correlation-ID"]


async def test_get_queries_need_credentials_too(api: Api, gen2: None) -> None:
    refused = await api.client.get("/graphql", params={"query": QUERY})
    assert refused.status_code == 401
    answered = await api.client.get(
        "/graphql", params={"query": QUERY}, headers={"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID}
    )
    assert answered.json() == {"data": {"batch": {"id": FIXTURE_BATCH}}}


async def test_another_users_batch_and_essay_are_not_found(api: Api, gen2: None) -> None:
    query = """query($b: ID!, $e: ID!) {
      batch(id: $b) { id }
      essay(id: $e) { id batch { id } }
    }"""
    variables = {"b": FIXTURE_BATCH, "e": ESSAY}
    assert await api.data(query, variables, user="someone-else") == {"batch": None, "essay": None}
    assert await api.data(query, variables, user=FIXTURE_USER) == {
        "batch": {"id": FIXTURE_BATCH},
        "essay": {"id": ESSAY, "batch": {"id": FIXTURE_BATCH}},
    }


async def test_lists_are_the_header_users(api: Api, gen2: None) -> None:
    query = "query($u: String) { batches(userId: $u) { totalCount nodes { id } } }"
    own = await api.data(query, {"u": None}, user=FIXTURE_USER)
    assert own["batches"] == {"totalCount": 1, "nodes": [{"id": FIXTURE_BATCH}]}
    assert await api.data(query, {"u": FIXTURE_USER}, user=FIXTURE_USER) == own
    assert (await api.data(query, {"u": None}, user="someone-else"))["batches"]["totalCount"] == 0

    [error] = await api.errors(query, {"u": FIXTURE_USER}, user="someone-else")
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert "X-User-ID" in error["message"]
    assert error["path"] == ["batches"]
