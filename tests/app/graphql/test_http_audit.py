"""GraphQL over HTTP to the letter: graphql-http's server audit (the reference implementation's conformance list,
npm `graphql-http`) against a live `create_app` served by uvicorn, with the result cache in front, reports no MUST
failure (`error`) and no SHOULD warning (`warn`); the optional audits (MAY, `notice`) pass too. Whether an answer
came from the cache depends on Redis answering in time on a busy machine, so it is not asserted here:
test_media_types.py shows that hits carry the media type asked for.

Needs node (18 or later, for `fetch`) and npm reaching its registry; skipped otherwise. graphql-http is installed into
a temporary directory at a pinned version, so a new release's audits cannot fail an unchanged service.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import QueryCache
from app.main import create_app
from infra import cache_keys as ck
from tests.app.graphql.conftest import AUTH, settings_for
from tests.app.graphql.served import served
from tests.helpers.cache import cache_settings
from tests.helpers.npm import installed

AUDIT_SCRIPT = Path(__file__).with_name("graphql_http_audit.cjs")
PACKAGES = ("graphql-http@1.23.1", "graphql@16.11.0")
# Guards against a hang only (an audit that never ends), never a measure of speed.
AUDIT_GUARD_SECONDS = 300


@pytest.fixture(scope="session")
def graphql_http(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """node and an npm prefix holding graphql-http (the audit uses node 18's global fetch)."""
    return installed(tmp_path_factory, "graphql-http", PACKAGES, min_node=18)


@pytest.fixture
async def cached_url(engine: AsyncEngine, redis_url: str) -> AsyncIterator[str]:
    settings = cache_settings(redis_url, internal_api_key=settings_for().internal_api_key, environment="development")
    cache = QueryCache(ck.connect(settings), settings)
    async with served(create_app(settings, engine, cache=cache)) as url:
        yield url


async def _audit(node: str, prefix: Path, url: str) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        node,
        str(AUDIT_SCRIPT),
        str(prefix),
        url,
        json.dumps(AUTH),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(AUDIT_GUARD_SECONDS):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    results: list[dict[str, Any]] = json.loads(out)
    return results


async def test_graphql_http_audit_finds_no_failure_and_no_warning(
    graphql_http: tuple[str, Path], cached_url: str
) -> None:
    node, prefix = graphql_http
    results = await _audit(node, prefix, f"{cached_url}/graphql")
    assert len(results) > 40  # the audit ran in full
    failed = [result for result in results if result["status"] != "ok"]
    assert failed == [], json.dumps(failed, indent=1)
