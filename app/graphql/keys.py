"""A GraphQL request's cache key: its single operation, read the way Strawberry will read it (a POSTed JSON body or
a GET's query parameters), with the caller's scope and the endpoint's version. A request that is not one plain
operation (batched, malformed) has no key: it skips the cache and gets Strawberry's own errors."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from app.cache import graphql_cache_key
from app.graphql.body import RequestBody


@dataclass(frozen=True, slots=True)
class Keyed:
    """A request's cache key (None: not cacheable, or no cache) and its operation name as the metrics label it."""

    key: str | None
    operation: str


@dataclass(frozen=True, slots=True)
class _Operation:
    query: str
    name: str | None
    variables: dict[str, Any] | None


# Gateways send the same few bodies over and over; parsing one and computing its key was a third of a cache hit's
# own time (bench R1). Bounded like `app.cache._normalized`: at most 256 bodies of at most 20,000 bytes.
_KEYED_MAX_BYTES = 20_000


async def request_key(
    request: Request, body: RequestBody, headers: Mapping[str, str], user_id: str | None, version: str | None
) -> Keyed:
    """The request's key under `version` (the endpoint's schema and limits; None when there is no cache, and then
    the key is None too and only the operation name is read)."""
    if request.method == "POST" and headers.get("content-type", "").split(";")[0].strip() == "application/json":
        posted = await body.read()
        if version is not None and len(posted) <= _KEYED_MAX_BYTES:
            return _keyed_post(posted, user_id, version)
        return _keyed(_posted(posted), user_id, version)
    operation = _got(request) if request.method == "GET" else None
    return _keyed(operation, user_id, version)


@functools.lru_cache(maxsize=256)
def _keyed_post(body: bytes, user_id: str | None, version: str) -> Keyed:
    return _keyed(_posted(body), user_id, version)


def _keyed(operation: _Operation | None, user_id: str | None, version: str | None) -> Keyed:
    name = (operation.name if operation else None) or "anonymous"
    if operation is None or version is None:
        return Keyed(None, name)
    return Keyed(graphql_cache_key(operation.query, operation.name, operation.variables, user_id, version), name)


def _posted(body: bytes) -> _Operation | None:
    """The single operation a POSTed JSON body carries; None when that is not plain (see the module's doc)."""
    try:
        return _single(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def _got(request: Request) -> _Operation | None:
    """The single operation of a GET's query parameters, as `_posted`."""
    params = request.query_params
    raw_variables = params.get("variables")
    try:
        variables = orjson.loads(raw_variables) if raw_variables else None
    except orjson.JSONDecodeError:
        return None
    return _single({"query": params.get("query"), "operationName": params.get("operationName"), "variables": variables})


def _single(data: object) -> _Operation | None:
    if not isinstance(data, dict):
        return None
    query, name, variables = data.get("query"), data.get("operationName"), data.get("variables")
    if not isinstance(query, str) or not isinstance(name, str | None) or not isinstance(variables, dict | None):
        return None
    return _Operation(query, name, variables)
