"""Per-request dataloaders over db/reads.py: every database read behind a field goes through one of these.

Loads made while a query resolves one level of its tree are collected and answered by one set-based statement per
loader (per distinct page shape for pages), so the number of statements a query issues does not grow with the number
of batches or essays it returns. Statements a level would send separately are fused where they read the same rows:
an essay page comes with its phase results, and a batch's essay count with its phase progress when both are asked
(the tally loader). Loaders return the plain rows of db/rows.py, never GraphQL types, so the REST shim can use them
as they are.

Each loader also records what it read in `ReadTags`, for a whole-result cache to know which changes make a cached
response stale. When the request is traced, each loader's batch is a span (`load batch`, `load essay_page`…) around
its statements' spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiodataloader import DataLoader
from opentelemetry.trace import Tracer
from sqlalchemy.ext.asyncio import AsyncConnection

from app.reads.session import ReadSession
from db import reads
from db.reads import BatchCursor, BatchQuery, BatchWithEssays, PhaseFilter
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
class EssayPageKey:
    batch_id: str
    first: int
    after: str | None
    phase_filter: PhaseFilter | None


@dataclass(frozen=True, slots=True)
class EssayCountKey:
    batch_id: str
    phase_filter: PhaseFilter | None


@dataclass(frozen=True, slots=True)
class _TallyKey:
    """A batch's essays passing a filter (counted), or, with `progress`, all of them with their open phases."""

    batch_id: str
    phase_filter: PhaseFilter | None
    progress: bool


PROJECTION = "projection"
"""The projection loader's only key."""


def _grouped(keys: Sequence[K], shape: Callable[[K], Hashable]) -> dict[Hashable, list[K]]:
    groups: dict[Hashable, list[K]] = {}
    for key in keys:
        groups.setdefault(shape(key), []).append(key)
    return groups


class Loaders:
    """The dataloaders of one request. `user_id` (from X-User-ID) limits every read to that user's batches; `tracer`,
    when the request is traced, makes a span of each loader's batch."""

    def __init__(self, session: ReadSession, user_id: str | None, tags: ReadTags, tracer: Tracer | None = None) -> None:
        self._session = session
        self._user_id = user_id
        self._tags = tags
        self._tracer = tracer
        self.batch: DataLoader[str, BatchRow | None] = self._loader(self._batches)
        self.batch_page: DataLoader[BatchPageKey, Page[BatchRow]] = self._loader(self._batch_pages)
        self.batch_count: DataLoader[BatchQuery, int] = self._loader(self._batch_counts)
        self.essay: DataLoader[str, EssayRow | None] = self._loader(self._essays)
        self.essay_page: DataLoader[EssayPageKey, Page[EssayRow]] = self._loader(self._essay_pages)
        self._tally: DataLoader[_TallyKey, int | PhaseProgress] = self._loader(self._tallies)
        self.projection: DataLoader[str, PositionsView] = self._loader(self._projection)

    @staticmethod
    def _loader(batch_load: Callable[[list[K]], Coroutine[Any, Any, list[V]]]) -> DataLoader[K, V]:
        # Bound explicitly to the running loop: aiodataloader would otherwise call get_event_loop() itself.
        return DataLoader(batch_load, loop=asyncio.get_running_loop())

    async def _read(
        self, loader: str, keys: int, read: Callable[[AsyncConnection], Awaitable[V]], alone: bool = False
    ) -> V:
        """`read` in the request's snapshot, or `alone` (ReadSession.run_alone); a span named for `loader` when
        traced."""
        run = self._session.run_alone if alone else self._session.run
        if self._tracer is None:
            return await run(read)
        with self._tracer.start_as_current_span(f"load {loader}", attributes={"ras.loader.keys": keys}):
            return await run(read)

    async def _batches(self, ids: list[str]) -> list[BatchRow | None]:
        self._tags.batches.update(ids)
        found = await self._read("batch", len(ids), lambda conn: reads.batches_by_id(conn, ids, self._user_id))
        return [found.get(batch_id) for batch_id in ids]

    async def _batch_pages(self, keys: list[BatchPageKey]) -> list[Page[BatchRow]]:
        async def read(conn: AsyncConnection) -> list[Page[BatchRow]]:
            return [await reads.batch_page(conn, k.query, k.first, k.after) for k in keys]

        pages = await self._read("batch_page", len(keys), read)
        self._tags.user_lists.update(k.query.user_id or ALL_USERS for k in keys)
        self._tags.batches.update(row.batch_id for page in pages for row in page.rows)
        return pages

    async def _batch_counts(self, queries: list[BatchQuery]) -> list[int]:
        self._tags.user_lists.update(q.user_id or ALL_USERS for q in queries)

        async def read(conn: AsyncConnection) -> list[int]:
            return [await reads.count_batches(conn, q) for q in queries]

        return await self._read("batch_count", len(queries), read)

    async def _essays(self, ids: list[str]) -> list[EssayRow | None]:
        found = await self._read("essay", len(ids), lambda conn: reads.essays_by_id(conn, ids, self._user_id))
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

        pages = await self._read("essay_page", len(keys), read)
        return [pages[k] for k in keys]

    async def essay_count(self, key: EssayCountKey) -> int:
        """How many of the batch's essays pass the key's filter."""
        found = await self._tally.load(_TallyKey(key.batch_id, key.phase_filter, progress=False))
        return found if isinstance(found, int) else found.essays

    async def phase_progress(self, batch_id: str) -> PhaseProgress:
        """The batch's essays and those whose spellcheck / CJ result is still open."""
        found = await self._tally.load(_TallyKey(batch_id, None, progress=True))
        return found if isinstance(found, PhaseProgress) else PhaseProgress(found, 0, 0)

    async def _tallies(self, keys: list[_TallyKey]) -> list[int | PhaseProgress]:
        self._tags.batches.update(k.batch_id for k in keys)
        # The progress statement counts every essay too: unfiltered counts asked beside it need no statement.
        progress_ids = list(dict.fromkeys(k.batch_id for k in keys if k.phase_filter is None))
        with_progress = any(k.progress for k in keys)
        uncovered = [k for k in keys if k.phase_filter is not None or not with_progress]
        counted = _grouped(uncovered, lambda k: k.phase_filter)

        async def read(conn: AsyncConnection) -> dict[_TallyKey, int | PhaseProgress]:
            found: dict[_TallyKey, int | PhaseProgress] = {}
            if with_progress:
                progress = await reads.phase_progress(conn, progress_ids)
                for batch_id, tally in progress.items():
                    found[_TallyKey(batch_id, None, progress=True)] = tally
                    found[_TallyKey(batch_id, None, progress=False)] = tally.essays
            for group in counted.values():
                counts = await reads.count_essays(conn, [k.batch_id for k in group], group[0].phase_filter)
                found.update((k, counts[k.batch_id]) for k in group)
            return found

        found = await self._read("tally", len(keys), read)
        return [found[k] for k in keys]

    async def batch_with_essays(self, batch_id: str) -> BatchWithEssays | None:
        """The batch with every one of its essays, read by one statement outside any snapshot: only for a request
        that reads nothing else (the REST shim's batch status)."""
        self._tags.batches.add(batch_id)
        return await self._read(
            "batch_with_essays", 1, lambda conn: reads.batch_with_essays(conn, batch_id, self._user_id), alone=True
        )

    async def batch_slice_with_essays(
        self, query: BatchQuery, limit: int, offset: int
    ) -> tuple[list[BatchWithEssays], int]:
        """An offset page of a batch list (the REST shim's `limit`/`offset`), every essay of its batches, and the
        list's total, read like `batch_with_essays`."""
        self._tags.user_lists.add(query.user_id or ALL_USERS)
        found = await self._read(
            "batch_slice_with_essays",
            1,
            lambda conn: reads.batch_slice_with_essays(conn, query, limit, offset),
            alone=True,
        )
        self._tags.batches.update(batch.batch_id for batch, _ in found[0])
        return found

    async def _projection(self, keys: list[str]) -> list[PositionsView]:
        # Positions move with every consumed record: nothing could tell a cache when this answer is stale.
        self._tags.cacheable = False
        state = await self._read("projection", len(keys), reads.positions_view)
        return [state for _ in keys]
