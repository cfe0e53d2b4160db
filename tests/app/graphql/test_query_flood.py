"""A flood of unique query texts leaves the API's per-text memories bounded: the parsed documents
(app/graphql/documents.py), Strawberry's validation cache and the request-key memos (app/graphql/keys.py) each keep
at most their size, however many distinct texts callers send (they choose the texts). Through the real endpoint."""

from __future__ import annotations

import functools
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route
from strawberry.extensions.validation_cache import _get_validate_cache

from app.graphql.documents import Documents
from app.graphql.schema import DOCUMENT_CACHE_SIZE
from app.main import GRAPHQL_PATH, create_app
from tests.app.graphql.conftest import AUTH, settings_for

FLOOD = 3 * DOCUMENT_CACHE_SIZE


def _documents(endpoint: Any) -> Documents:
    """The schema's parsed-document store, from the extension factory that closes over it."""
    for factory in endpoint.schema.extensions:
        for cell in getattr(factory, "__closure__", None) or ():
            if isinstance(cell.cell_contents, Documents):
                return cell.cell_contents
    raise AssertionError("the schema has no document cache")


async def test_unique_query_texts_do_not_grow_the_caches(engine: AsyncEngine) -> None:
    app = create_app(settings_for(), engine)
    endpoint: Any = next(r.endpoint for r in app.routes if isinstance(r, Route) and r.path == GRAPHQL_PATH)
    documents = _documents(endpoint)
    validated: Any = _get_validate_cache(DOCUMENT_CACHE_SIZE)  # Strawberry's, shared by maxsize
    memos: list[functools._lru_cache_wrapper[Any]] = [endpoint._keys._posted, endpoint._keys._text_refusal]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client:
        for i in range(FLOOD):
            # Each text valid and distinct, so each is parsed, validated and kept if anything keeps it.
            response = await client.post(GRAPHQL_PATH, json={"query": f"{{ f{i}: __typename }}"}, headers=AUTH)
            assert response.json() == {"data": {f"f{i}": "Query"}}
    assert len(documents._documents) == documents.size == DOCUMENT_CACHE_SIZE
    assert 0 < validated.cache_info().currsize <= DOCUMENT_CACHE_SIZE
    for memo in memos:
        info = memo.cache_info()
        assert info.maxsize is not None and 0 < info.currsize <= info.maxsize
    # The newest texts are the ones kept: a text sent again is served from the store.
    assert documents.get(f"{{ f{FLOOD - 1}: __typename }}") is not None
    assert documents.get("{ f0: __typename }") is None
