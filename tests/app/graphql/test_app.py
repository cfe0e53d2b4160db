"""The app as `ras serve` runs it: its lifespan owns the engine; a tampered GraphiQL file stops start-up."""

from __future__ import annotations

import httpx
import pytest

from app import graphiql
from app.main import create_app
from tests.app.graphql.conftest import AUTH, settings_for


async def test_lifespan_creates_and_disposes_the_engine(database_url: str) -> None:
    app = create_app(settings_for(database_url=database_url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client,
    ):
        response = await client.post("/graphql", json={"query": "{ projection { quarantinedCount } }"}, headers=AUTH)
    assert response.json() == {"data": {"projection": {"quarantinedCount": 0}}}


def test_a_graphiql_file_that_differs_from_its_pin_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    graphiql.assets.cache_clear()
    monkeypatch.setitem(graphiql.VENDOR_SHA256, "react.production.min.js", "not-the-pinned-digest=")
    try:
        with pytest.raises(graphiql.AssetError, match=r"react\.production\.min\.js has SHA-256"):
            create_app(settings_for())
        create_app(settings_for(environment="production"))  # GraphiQL off: its files are not needed
    finally:
        graphiql.assets.cache_clear()
