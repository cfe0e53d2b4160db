"""Per-request dataloaders over db/reads.py: every database read behind a field goes through one of these.

Loads made while a query resolves one level of its tree are collected and answered by one set-based statement per
loader (per distinct page shape for pages), so the number of statements a query issues does not grow with the number
of batches or essays it returns. Loaders return the plain rows of db/rows.py, never GraphQL types, so the REST shim
can use them as they are.

Each loader also records what it read in `ReadTags`, for a whole-result cache to know which changes make a cached
response stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiodataloader import DataLoader
from sqlalchemy.ext.asyncio import AsyncConnection

from app.reads.session import ReadSession
from db import reads
from db.reads import BatchCursor, BatchQuery, PhaseFilter
from db.rows import BatchRow, EssayRow, Page, PhaseProgress, PositionsView

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

ALL_USERS = "*"
"""The user-list tag of a list view over every user's batches."""


@dataclass
class ReadTags:
    """What a request read: batches by id, list views by user id, and whether the result may be cached at all."""

    batches: set[str] = field(default_factory=set)
    user_lists: set[str] = field(default_factory=set)
    # False when the response depends on something no batch or user tag covers (projection positions, an
    # essay not yet linked to a batch).
    cacheable: bool = True


@dataclass(frozen=True, slots=True)
class BatchPageKey:
    query: BatchQuery
    first: int
    after: BatchCursor | None


@dataclass(frozen=True, slots=True)
class BatchSliceKey:
    """An offset page of a batch list (the REST shim's `limit`/`offset`)."""

    query: BatchQuery
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class EssayPageKey:
    batch_id: str
    first: int
    after: str | None
    phase_filter: PhaseFilter | None


@dataclass(frozen=True, slots=True)
class EssayCountKey:
    batch_id: str
    phase_filter: PhaseFilter | None


PROJECTION = "projection"
"""The projection loader's only key."""


def _grouped(keys: Sequence[K], shape: Callable[[K], Hashable]) -> dict[Hashable, list[K]]:
    groups: dict[Hashable, list[K]] = {}
    for key in keys:
        groups.setdefault(shape(key), []).append(key)
    return groups


class Loaders:
    """The dataloaders of one request. `user_id` (from X-User-ID) limits every read to that user's batches."""

    def __init__(self, session: ReadSession, user_id: str | None, tags: ReadTags) -> None:
        self._session = session
        self._user_id = user_id
        self._tags = tags
        self.batch: DataLoader[str, BatchRow | None] = self._loader(self._batches)
        self.batch_page: DataLoader[BatchPageKey, Page[BatchRow]] = self._loader(self._batch_pages)
        self.batch_count: DataLoader[BatchQuery, int] = self._loader(self._batch_counts)
        self.batch_slice: DataLoader[BatchSliceKey, list[BatchRow]] = self._loader(self._batch_slices)
        self.essay: DataLoader[str, EssayRow | None] = self._loader(self._essays)
        self.essay_page: DataLoader[EssayPageKey, Page[EssayRow]] = self._loader(self._essay_pages)
        self.essay_count: DataLoader[EssayCountKey, int] = self._loader(self._essay_counts)
        self.phase_progress: DataLoader[str, PhaseProgress] = self._loader(self._phase_progress)
        self.projection: DataLoader[str, PositionsView] = self._loader(self._projection)

    @staticmethod
    def _loader(batch_load: Callable[[list[K]], Coroutine[Any, Any, list[V]]]) -> DataLoader[K, V]:
        # Bound explicitly to the running loop: aiodataloader would otherwise call get_event_loop() itself.
        return DataLoader(batch_load, loop=asyncio.get_running_loop())

    async def _read(self, read: Callable[[AsyncConnection], Awaitable[V]]) -> V:
        return await self._session.run(read)

    async def _batches(self, ids: list[str]) -> list[BatchRow | None]:
        self._tags.batches.update(ids)
        found = await self._read(lambda conn: reads.batches_by_id(conn, ids, self._user_id))
        return [found.get(batch_id) for batch_id in ids]

    async def _batch_pages(self, keys: list[BatchPageKey]) -> list[Page[BatchRow]]:
        async def read(conn: AsyncConnection) -> list[Page[BatchRow]]:
            return [await reads.batch_page(conn, k.query, k.first, k.after) for k in keys]

        pages = await self._read(read)
        self._tags.user_lists.update(k.query.user_id or ALL_USERS for k in keys)
        self._tags.batches.update(row.batch_id for page in pages for row in page.rows)
        return pages

    async def _batch_slices(self, keys: list[BatchSliceKey]) -> list[list[BatchRow]]:
        async def read(conn: AsyncConnection) -> list[list[BatchRow]]:
            return [await reads.batch_slice(conn, k.query, k.limit, k.offset) for k in keys]

        slices = await self._read(read)
        self._tags.user_lists.update(k.query.user_id or ALL_USERS for k in keys)
        self._tags.batches.update(row.batch_id for rows in slices for row in rows)
        return slices

    async def _batch_counts(self, queries: list[BatchQuery]) -> list[int]:
        self._tags.user_lists.update(q.user_id or ALL_USERS for q in queries)

        async def read(conn: AsyncConnection) -> list[int]:
            return [await reads.count_batches(conn, q) for q in queries]

        return await self._read(read)

    async def _essays(self, ids: list[str]) -> list[EssayRow | None]:
        found = await self._read(lambda conn: reads.essays_by_id(conn, ids, self._user_id))
        essays = [found.get(essay_id) for essay_id in ids]
        linked = {essay.batch_id for essay in essays if essay is not None and essay.batch_id is not None}
        self._tags.batches.update(linked)
        if any(essay is None or essay.batch_id is None for essay in essays):
            # A missing or unlinked essay may appear under a batch id no tag names yet.
            self._tags.cacheable = False
        return essays

    async def _essay_pages(self, keys: list[EssayPageKey]) -> list[Page[EssayRow]]:
        self._tags.batches.update(k.batch_id for k in keys)
        groups = _grouped(keys, lambda k: (k.first, k.after, k.phase_filter))

        async def read(conn: AsyncConnection) -> dict[EssayPageKey, Page[EssayRow]]:
            pages: dict[EssayPageKey, Page[EssayRow]] = {}
            for group in groups.values():
                k0 = group[0]
                found = await reads.essay_pages(conn, [k.batch_id for k in group], k0.first, k0.after, k0.phase_filter)
                pages.update((k, found[k.batch_id]) for k in group)
            return pages

        pages = await self._read(read)
        return [pages[k] for k in keys]

    async def _essay_counts(self, keys: list[EssayCountKey]) -> list[int]:
        self._tags.batches.update(k.batch_id for k in keys)
        groups = _grouped(keys, lambda k: k.phase_filter)

        async def read(conn: AsyncConnection) -> dict[EssayCountKey, int]:
            counts: dict[EssayCountKey, int] = {}
            for group in groups.values():
                found = await reads.count_essays(conn, [k.batch_id for k in group], group[0].phase_filter)
                counts.update((k, found[k.batch_id]) for k in group)
            return counts

        counts = await self._read(read)
        return [counts[k] for k in keys]

    async def _phase_progress(self, batch_ids: list[str]) -> list[PhaseProgress]:
        self._tags.batches.update(batch_ids)
        found = await self._read(lambda conn: reads.phase_progress(conn, batch_ids))
        return [found[batch_id] for batch_id in batch_ids]

    async def _projection(self, keys: list[str]) -> list[PositionsView]:
        # Positions move with every consumed record: nothing could tell a cache when this answer is stale.
        self._tags.cacheable = False
        state = await self._read(reads.positions_view)
        return [state for _ in keys]
