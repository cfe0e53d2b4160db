"""A flood of unique operation names leaves /metrics bounded (the names are chosen by callers)."""

from __future__ import annotations

import re
import uuid

import pytest

from app import metrics
from app.graphiql import example_operation_names
from app.metrics import MAX_OPERATION_LENGTH, MAX_OPERATIONS, OperationLabels
from tests.app.graphql.conftest import AUTH, Api

FLOOD = MAX_OPERATIONS + 150
LABEL = re.compile(r'^ras_api_requests_total\{endpoint="graphql",operation="([^"]*)"', re.M)


async def test_unique_operation_names_do_not_grow_the_metrics(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "OPERATIONS", OperationLabels())  # this process's other tests keep their names
    metrics.OPERATIONS.allow(example_operation_names())
    # Labels this process's earlier tests created stay in the registry: only the ones added here are the flood's.
    before = set(LABEL.findall((await api.client.get("/metrics", headers=AUTH)).text))
    for _ in range(FLOOD):
        name = "Probe_" + uuid.uuid4().hex * 10  # 326 characters, a valid GraphQL name
        response = await api.client.post(
            "/graphql", json={"query": f"query {name} {{ __typename }}", "operationName": name}, headers=AUTH
        )
        assert response.status_code == 200, response.text
    scraped = await api.client.get("/metrics", headers=AUTH)
    values = set(LABEL.findall(scraped.text))
    assert "other" in values, "names past the limit are counted, as other"
    assert len(values - before) <= MAX_OPERATIONS + len(example_operation_names()) + 1
    assert max(len(value) for value in values) <= MAX_OPERATION_LENGTH
    assert len(scraped.text) < 500_000, "the scrape stays small (each flooded name alone was 326 characters)"
