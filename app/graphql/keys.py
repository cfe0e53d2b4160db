"""A GraphQL request prepared for the cache: its single operation read and checked the way app/graphql/operation.py
does (a `Refusal` for a malformed request or a text over the limits, before any GraphQL parsing), its cache key under
the caller's scope and the endpoint's version, and its metrics label. Without a cache there is no key, but the
operation is read and checked all the same: Strawberry is handed this very operation (endpoint.py)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request

from app.cache import graphql_cache_key
from app.graphql import operation as op
from app.graphql.body import RequestBody
from app.limits import ApiLimits

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Prepared:
    """The request's operation (None when it could not be read), why it is refused (None: it is not), its cache key
    (None: not cached, or no cache) and its operation name as the metrics label it."""

    operation: op.Operation | None
    refusal: op.Refusal | None
    key: str | None
    label: str


# Gateways send the same few bodies over and over; parsing one and computing its key was a third of a cache hit's
# own time (bench R1). Bounded like `app.cache._normalized`: at most 256 bodies of at most 20,000 bytes.
_KEYED_MAX_BYTES = 20_000
_MEMO_SIZE = 256


class RequestKeys:
    """Prepares the endpoint's requests under `version` (its schema and limits; None when there is no cache)."""

    def __init__(self, version: str | None, limits: ApiLimits) -> None:
        self._version = version
        self._max_length = limits.max_query_length
        self._max_tokens = limits.max_tokens
        self._posted = functools.lru_cache(maxsize=_MEMO_SIZE)(self._prepare_posted)
        self._text_refusal = functools.lru_cache(maxsize=_MEMO_SIZE)(self._check_text)

    async def prepare(
        self, request: Request, body: RequestBody, headers: Mapping[str, str], user_id: str | None
    ) -> Prepared:
        """A GET's or a POST's request (other methods are refused before)."""
        if request.method != "POST":
            return self._prepared(op.got(request.query_params), user_id)
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return Prepared(None, op.UNSUPPORTED_CONTENT_TYPE, None, ANONYMOUS)
        posted = await body.read()
        if len(posted) <= _KEYED_MAX_BYTES:
            return self._posted(posted, user_id)
        return self._prepare_posted(posted, user_id)

    def _prepare_posted(self, body: bytes, user_id: str | None) -> Prepared:
        return self._prepared(op.posted(body), user_id)

    def _prepared(self, read: op.Operation | op.Refusal, user_id: str | None) -> Prepared:
        if isinstance(read, op.Refusal):
            return Prepared(None, read, None, ANONYMOUS)
        label = read.name or ANONYMOUS
        query = read.query
        # The limits before the key: the key parses the text, and only a text within them is worth parsing.
        refusal = self._text_refusal(query) if len(query) <= self._max_length else self._check_text(query)
        if refusal is not None:
            return Prepared(read, refusal, None, label)
        if self._version is None:
            return Prepared(read, None, None, label)
        key = graphql_cache_key(query, read.name, read.variables, user_id, self._version)
        return Prepared(read, None, key, label)

    def _check_text(self, query: str) -> op.Refusal | None:
        return op.text_refusal(query, self._max_length, self._max_tokens)
