"""A GraphQL request prepared for the cache: its single operation read and checked the way app/graphql/operation.py
does (a `Refusal` for a malformed request or a text over the limits, before any GraphQL parsing) and as persisted
documents have it (app/graphql/persisted.py), its cache key under the caller's scope and the endpoint's version, and
its metrics label. Without a cache there is no key, but the operation is read and checked all the same: Strawberry
is handed this very operation (endpoint.py).

The key is `app.cache.graphql_cache_key`'s: over the document as printed after parsing, or, for a request that
names its document by id, over `sha256:<id>` in its place (no printed document starts so), so such a request is keyed
without its text."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request

from app.cache import graphql_cache_key
from app.graphql import operation as op
from app.graphql.body import RequestBody
from app.graphql.persisted import PersistedDocuments
from app.limits import ApiLimits
from infra import cache_keys as ck

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

    def __init__(self, version: str | None, limits: ApiLimits, documents: PersistedDocuments) -> None:
        self._version = version
        self._documents = documents
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
        if query is not None:
            refusal = self._text_refusal(query) if len(query) <= self._max_length else self._check_text(query)
            if refusal is not None:
                return Prepared(read, refusal, None, label)
        named = self._documents.named(read)
        if isinstance(named, op.Refusal):
            return Prepared(read, named, None, label)
        if self._version is None:
            return Prepared(named, None, None, label)
        return Prepared(named, None, self._key(named, user_id, self._version), label)

    @staticmethod
    def _key(operation: op.Operation, user_id: str | None, version: str) -> str | None:
        if operation.document_id is None:
            assert operation.query is not None, "an operation without a query names its document"
            return graphql_cache_key(operation.query, operation.name, operation.variables, user_id, version)
        document = f"sha256:{operation.document_id}"
        try:
            parts = ["graphql", version, document, operation.name or None, dict(operation.variables or {}), user_id]
            return ck.digest(parts)
        except TypeError:  # variables orjson cannot write (nested past its limit): not cached, as graphql_cache_key
            return None

    def _check_text(self, query: str) -> op.Refusal | None:
        return op.text_refusal(query, self._max_length, self._max_tokens)
