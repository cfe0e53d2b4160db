"""Persisted documents (RAS_DOCUMENTS): a request may name its GraphQL document by the SHA-256 of its text instead
of sending the text (app/graphql/operation.py reads both forms), and a production server may run only the documents
its operators trusted.

* `apq`, Apollo's automatic persisted queries: a request naming an unknown document gets PERSISTED_QUERY_NOT_FOUND;
  the client sends it again with the text, which registers the document (once it executed: only valid documents are
  kept) and every later request may send the id alone, GET included.
* `trusted`: only documents `ras documents add` stored as trusted run, named by their id or sent as text (whose
  SHA-256 must then be a trusted one); anything else is refused (PERSISTED_QUERY_NOT_FOUND for an unknown id,
  DOCUMENT_NOT_TRUSTED for any other text), and nothing is registered.
* `off`: any query runs, and a request naming a document is refused with PERSISTED_QUERY_NOT_SUPPORTED.

Documents live in PostgreSQL (db/documents.py), where every one lasts, and in Redis (`P:d:{sha256}`, a day), the
fast layer shared by API processes; each process keeps the most recent ones it used in memory. A text read back from
Redis or PostgreSQL is used only if it hashes to its id. The text is then the same string for every request that
names it, so Strawberry parses and validates it once (app/graphql/documents.py, ValidationCache).

Requests naming a document are resolved on the cache's miss path only (endpoint.py): a result is cached under the
document's id, so a hit needs neither the text nor a lookup. In `trusted` mode every text is keyed by its id too,
so a cached result is only ever served for the exact text that was trusted when it executed.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import (
    DOCUMENT_NOT_TRUSTED,
    PERSISTED_QUERY_NOT_FOUND,
    PERSISTED_QUERY_NOT_SUPPORTED,
    SERVICE_UNAVAILABLE,
)
from app.graphql.operation import Operation, Refusal, sha256_of
from db import documents as stored
from infra import cache_keys as ck

log = structlog.get_logger(__name__)

Mode = Literal["apq", "trusted", "off"]

REDIS_TTL_SECONDS = 86_400
"""How long a document stays in Redis after it was last fetched from PostgreSQL or registered."""
KEPT_IN_MEMORY = 1_024
"""Documents each process keeps by id (texts of at most the query length limit each)."""

NOT_FOUND = Refusal("PersistedQueryNotFound", PERSISTED_QUERY_NOT_FOUND, 200)  # Apollo's exact words
NOT_SUPPORTED = Refusal("PersistedQueryNotSupported", PERSISTED_QUERY_NOT_SUPPORTED, 200)
TRUSTED_NOT_FOUND = Refusal(
    "PersistedQueryNotFound: no trusted document has this id. This server runs only trusted documents "
    "(RAS_DOCUMENTS=trusted), added with `ras documents add`.",
    PERSISTED_QUERY_NOT_FOUND,
    200,
)


def not_trusted(document_id: str) -> Refusal:
    return Refusal(
        f"This server runs only trusted documents (RAS_DOCUMENTS=trusted), and this one (sha256:{document_id}) is not "
        "one: send a document added with `ras documents add`, or add this one.",
        DOCUMENT_NOT_TRUSTED,
        200,
    )


@dataclass(frozen=True, slots=True)
class _Document:
    body: str
    trusted: bool


class PersistedDocuments:
    """One per endpoint. `redis` is the fast layer (None: PostgreSQL only); the engine is the API's."""

    def __init__(
        self, mode: Mode, engine: Callable[[], AsyncEngine], redis: ck.Client | None, layout: ck.CacheLayout
    ) -> None:
        self.mode = mode
        self._engine = engine
        self._redis = redis
        self._layout = layout
        self._kept: OrderedDict[str, _Document] = OrderedDict()

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    # --- before the cache key: pure, so a POST body's answer is memoized with its key (keys.py) ---------------------

    def named(self, operation: Operation) -> Operation | Refusal:
        """The operation as the cache keys it: refused when documents are off and it names one; in `trusted` mode a
        text also gets its id, which the miss path checks and the key is made of."""
        if operation.document_id is not None and self.mode == "off":
            return NOT_SUPPORTED
        if self.mode == "trusted" and operation.document_id is None and operation.query is not None:
            return dataclasses.replace(operation, document_id=sha256_of(operation.query))
        return operation

    # --- on a miss --------------------------------------------------------------------------------------------------

    async def resolved(self, operation: Operation) -> Operation | Refusal:
        """The operation with the text of the document it names, or why it may not run."""
        document_id = operation.document_id
        if document_id is None:
            return operation
        if self.mode == "apq" and operation.query is not None:
            return operation  # a registration: the text came with its id, and operation.py checked they match
        try:
            found = await self._find(document_id, trusted=self.mode == "trusted")
        except (SQLAlchemyError, OSError) as exc:
            log.warning("persisted document lookup failed", document_id=document_id, error=repr(exc))
            return Refusal(
                "Persisted documents cannot be read just now (the database does not answer); retry shortly.",
                SERVICE_UNAVAILABLE,
                503,
            )
        if found is None:
            if self.mode == "apq":
                return NOT_FOUND
            return TRUSTED_NOT_FOUND if operation.query is None else not_trusted(document_id)
        return dataclasses.replace(operation, query=found.body)

    async def register(self, operation: Operation) -> None:
        """After an APQ registration executed (so its document is valid): keep it in PostgreSQL and Redis. A failure
        only costs a client another round trip later, so it is logged and the answer goes out all the same."""
        if self.mode != "apq" or operation.document_id is None or operation.query is None:
            return
        document_id, body = operation.document_id, operation.query
        self._keep(document_id, _Document(body, trusted=False))
        try:
            async with self._engine().begin() as conn:
                await stored.register(conn, stored.NewDocument(document_id, body))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("persisted document not stored in PostgreSQL", document_id=document_id, error=repr(exc))
        await self._cache(document_id, _Document(body, trusted=False), only_new=True)

    async def _find(self, document_id: str, *, trusted: bool) -> _Document | None:
        """The document by id (a trusted one when `trusted`): from memory, else Redis, else PostgreSQL. A copy not
        trusted is looked up further, since `ras documents add` may have trusted it since."""
        kept = self._kept.get(document_id)
        if kept is not None and (kept.trusted or not trusted):
            self._kept.move_to_end(document_id)
            return kept
        cached = await self._cached(document_id)
        if cached is not None and (cached.trusted or not trusted):
            self._keep(document_id, cached)
            return cached
        async with self._engine().connect() as conn:
            row = await stored.find(conn, document_id)
        if row is None or sha256_of(row.body) != document_id:
            return None
        found = _Document(row.body, row.trusted)
        self._keep(document_id, found)
        await self._cache(document_id, found)
        return found if found.trusted or not trusted else None

    def _keep(self, document_id: str, document: _Document) -> None:
        self._kept[document_id] = document
        self._kept.move_to_end(document_id)
        while len(self._kept) > KEPT_IN_MEMORY:
            self._kept.popitem(last=False)

    async def _cached(self, document_id: str) -> _Document | None:
        if self._redis is None:
            return None
        try:
            await ck.discovered(self._redis)
            value = await self._redis.get(self._layout.document(document_id))
        except ck.FAILURES as exc:  # fail-open: PostgreSQL has every document
            log.debug("persisted document not read from Redis", document_id=document_id, error=repr(exc))
            return None
        if not isinstance(value, bytes) or len(value) < 2:
            return None
        document = _Document(value[1:].decode(errors="replace"), trusted=value[:1] == b"t")
        if sha256_of(document.body) != document_id:
            log.warning("persisted document in Redis does not hash to its id: ignored", document_id=document_id)
            return None
        return document

    async def _cache(self, document_id: str, document: _Document, *, only_new: bool = False) -> None:
        if self._redis is None:
            return
        value = (b"t" if document.trusted else b"a") + document.body.encode()
        try:
            await ck.discovered(self._redis)
            await self._redis.set(self._layout.document(document_id), value, ex=REDIS_TTL_SECONDS, nx=only_new)
        except ck.FAILURES as exc:
            log.debug("persisted document not written to Redis", document_id=document_id, error=repr(exc))
