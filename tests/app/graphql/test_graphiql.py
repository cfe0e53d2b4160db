"""GraphiQL: served by the service itself (no CDN), with the example queries, pinned assets and a strict CSP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import shutil

import pytest
from graphql import parse, validate
from sqlalchemy.ext.asyncio import AsyncEngine

from app.graphiql import ASSET_PATH, VENDOR_SHA256, example_queries
from app.graphql.schema import build_schema
from tests.app.graphql.conftest import FIXTURE_BATCH, Api

BROWSER = {"Accept": "text/html,application/xhtml+xml"}


async def test_page_loads_only_this_services_assets(api: Api) -> None:
    response = await api.client.get("/graphql", headers=BROWSER)  # no credentials: the page holds no data
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    page = response.text
    assert "//" not in re.sub(r"<!--.*?-->", "", page).replace("http://www.w3.org", "")  # no absolute URL at all
    sources = [s for s in re.findall(r'(?:src|href)="([^"]+)"', page) if s != "data:,"]  # data: is the empty icon
    assert sources and all(s.startswith(ASSET_PATH + "/") for s in sources)
    for tag in re.findall(r"<(?:script|link)[^>]+>", page):
        if "integrity" in tag:
            name = re.search(r'(?:src|href)="[^"]*/([^"/]+)"', tag).group(1)  # type: ignore[union-attr]
            assert f'integrity="sha256-{VENDOR_SHA256[name]}"' in tag
    for source in sources:
        asset = await api.client.get(source)
        assert asset.status_code == 200, source
        name = source.rsplit("/", 1)[1]
        if name in VENDOR_SHA256:
            assert base64.b64encode(hashlib.sha256(asset.content).digest()).decode() == VENDOR_SHA256[name]


async def test_page_opens_the_examples_with_the_auth_headers_to_fill_in(api: Api) -> None:
    page = (await api.client.get("/graphql", headers=BROWSER)).text
    config = json.loads(re.search(r'id="ras-graphiql-config">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert config["endpoint"] == "/graphql"
    headers = json.loads(config["headers"])
    assert headers == {"X-Internal-API-Key": "", "X-Service-ID": "api-gateway-service"}  # never the key itself
    assert [tab["query"] for tab in config["tabs"]] == [query for _, query in example_queries()]
    assert json.loads(config["tabs"][1]["variables"]) == {"batchId": ""}


async def test_unknown_asset_is_404(api: Api) -> None:
    assert (await api.client.get(f"{ASSET_PATH}/../app/main.py")).status_code == 404
    assert (await api.client.get(f"{ASSET_PATH}/nope.js")).status_code == 404


def test_examples_are_valid_queries() -> None:
    schema = build_schema()._schema
    names = [name for name, _ in example_queries()]
    assert len(names) >= 5
    for name, query in example_queries():
        assert validate(schema, parse(query)) == [], name


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_graphiql_runs_a_query_in_headless_chromium(engine: AsyncEngine, database_url: str, gen2: None) -> None:
    from scripts.check_graphiql import check

    result = await asyncio.to_thread(check, database_url)
    assert result.ok, result
    assert FIXTURE_BATCH in result.response  # the first example, a batch list, ran and returned the fixture batch
