"""Insecure defaults (SECURITY.md, finding 4): a production `ras serve` gives away no schema.

The attack: with introspection off, a client could still spell the schema out one guess at a time from graphql-core's
"Did you mean …?" suggestions (unknown fields, arguments, types, enum values). A real `ras serve` with
RAS_ENVIRONMENT=production answers each guess without them, refuses introspection and serves no GraphiQL page; the
same guesses against a development app show the suggestions it hides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import API_KEY, AUTH, SERVICE_ID, api_for, settings_for
from tests.helpers.serve import ras_serve

# (query, variables, what the development message suggests)
GUESSES: list[tuple[str, dict[str, Any], str]] = [
    ("{ batchs { totalCount } }", {}, "Did you mean 'batch' or 'batches'?"),
    ("{ batches(frist: 1) { totalCount } }", {}, "Did you mean 'first'?"),
    ("query($s: BatchStatu) { batches { totalCount } }", {}, "Did you mean 'BatchStatus'"),
    ("{ batches(status: [PROCESSING_PIPELINE]) { totalCount } }", {}, "Did you mean the enum value"),
    (
        "query($s: [BatchStatus!]) { batches(status: $s) { totalCount } }",
        {"s": ["PROCESSING_PIPELINE"]},
        "Did you mean the enum value 'PROCESSING_PIPELINES'?",
    ),
    ("{ projection { waitFr } }", {}, "Did you mean 'waitFor'?"),
]


@pytest.fixture
async def production_server(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    log = tmp_path / "serve.log"
    async with (
        ras_serve(database_url, log, key=API_KEY, service=SERVICE_ID, RAS_ENVIRONMENT="production") as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield client


def _messages(response: httpx.Response) -> list[str]:
    return [error["message"] for error in response.json()["errors"]]


async def test_development_suggests_what_production_does_not(
    engine: AsyncEngine, production_server: httpx.AsyncClient
) -> None:
    development = api_for(engine, settings=settings_for(environment="development"))
    async with development.client:
        for query, variables, suggestion in GUESSES:
            shown = _messages(await development.post(query, variables))
            assert any(suggestion in message for message in shown), (query, shown)
            sent = {"query": query, "variables": variables}
            hidden = _messages(await production_server.post("/graphql", json=sent, headers=AUTH))
            assert hidden, query
            assert not any("Did you mean" in message for message in hidden), (query, hidden)
            # The message is still there, only its suggestion is gone.
            assert {m.split(" Did you mean")[0] for m in shown} == set(hidden), (shown, hidden)


async def test_production_refuses_introspection_and_serves_no_graphiql(production_server: httpx.AsyncClient) -> None:
    introspection = await production_server.post(
        "/graphql", json={"query": "{ __schema { types { name } } }"}, headers=AUTH
    )
    assert introspection.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    page = await production_server.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 404
    health = (await production_server.get("/healthz")).json()
    assert health["environment"] == "production"
