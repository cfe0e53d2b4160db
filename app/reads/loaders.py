"""Per-request dataloaders over db/reads.py: every database read behind a field goes through one of these.

Loads made while a query resolves one level of its tree are collected and answered by one set-based statement per
loader (per distinct page shape for pages), so the number of statements a query issues does not grow with the number
of batches or essays it returns. Statements a level would send separately are fused, since each is a round trip: a
batch page comes with its list's total (the batch list loader); an essay page comes with its phase results, and with
the essay counts and phase progress asked at the same level (the essays loader). Loaders return the plain rows of
db/rows.py, never GraphQL types, so the REST shim can use them as they are.

Each loader also records what it read in `ReadTags`, for a whole-result cache to know which changes make a cached
response stale. When the request is traced, each loader's batch is a span (`load batch`, `load essays`…) around
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
from db.reads import BatchCursor, BatchQuery, BatchWithEssays, PhaseFilter, Tally
from db.rows import BatchRow, EssayRow, Page, PhaseProgress, PositionsView

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
S = TypeVar("S", bound=Hashable)

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


def _grouped(keys: Sequence[K], shape: Callable[[K], S]) -> dict[S, list[K]]:
    groups: dict[S, list[K]] = {}
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
        # Pages of a batch list (BatchPageKey) and its totals (BatchQuery).
        self._batch_list: DataLoader[BatchPageKey | BatchQuery, Page[BatchRow] | int] = self._loader(self._lists)
        self.essay: DataLoader[str, EssayRow | None] = self._loader(self._essays)
        # Pages of a batch's essays (EssayPageKey), its essay counts and phase progress (_TallyKey).
        self._essay_level: DataLoader[EssayPageKey | _TallyKey, Page[EssayRow] | Tally] = self._loader(
            self._essay_reads
        )
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

    async def batch_page(self, key: BatchPageKey) -> Page[BatchRow]:
        """A page of the batches matching the key's query."""
        found = await self._batch_list.load(key)
        assert isinstance(found, Page)
        return found

    async def batch_count(self, query: BatchQuery) -> int:
        """How many batches match `query`."""
        found = await self._batch_list.load(query)
        assert isinstance(found, int)
        return found

    async def _lists(self, keys: list[BatchPageKey | BatchQuery]) -> list[Page[BatchRow] | int]:
        pages = [k for k in keys if isinstance(k, BatchPageKey)]
        totals = dict.fromkeys(k for k in keys if isinstance(k, BatchQuery))
        self._tags.user_lists.update((k if isinstance(k, BatchQuery) else k.query).user_id or ALL_USERS for k in keys)

        async def read(conn: AsyncConnection) -> dict[BatchPageKey | BatchQuery, Page[BatchRow] | int]:
            found: dict[BatchPageKey | BatchQuery, Page[BatchRow] | int] = {}
            for k in pages:
                if k.query in totals and k.query not in found:  # the total rides with the first page of its list
                    found[k], found[k.query] = await reads.batch_page_and_total(conn, k.query, k.first, k.after)
                else:
                    found[k] = await reads.batch_page(conn, k.query, k.first, k.after)
            for query in totals:
                if query not in found:
                    found[query] = await reads.count_batches(conn, query)
            return found

        found = await self._read("batch_list", len(keys), read)
        self._tags.batches.update(row.batch_id for k in pages for row in self._page_rows(found[k]))
        return [found[k] for k in keys]

    @staticmethod
    def _page_rows(found: Page[BatchRow] | int) -> list[BatchRow]:
        assert isinstance(found, Page)
        return found.rows

    async def _essays(self, ids: list[str]) -> list[EssayRow | None]:
        found = await self._read("essay", len(ids), lambda conn: reads.essays_by_id(conn, ids, self._user_id))
        essays = [found.get(essay_id) for essay_id in ids]
        linked = {essay.batch_id for essay in essays if essay is not None and essay.batch_id is not None}
        self._tags.batches.update(linked)
        if any(essay is None or essay.batch_id is None for essay in essays):
            # A missing or unlinked essay may appear under a batch id no tag names yet.
            self._tags.cacheable = False
        return essays

    async def essay_page(self, key: EssayPageKey) -> Page[EssayRow]:
        """A page of the batch's essays passing the key's filter, each with its phase results."""
        found = await self._essay_level.load(key)
        assert isinstance(found, Page)
        return found

    async def essay_count(self, key: EssayCountKey) -> int:
        """How many of the batch's essays pass the key's filter."""
        found = await self._essay_level.load(_TallyKey(key.batch_id, key.phase_filter, progress=False))
        assert not isinstance(found, Page)
        return found if isinstance(found, int) else found.essays

    async def phase_progress(self, batch_id: str) -> PhaseProgress:
        """The batch's essays and those whose spellcheck / CJ result is still open."""
        found = await self._essay_level.load(_TallyKey(batch_id, None, progress=True))
        assert not isinstance(found, Page)
        return found if isinstance(found, PhaseProgress) else PhaseProgress(found, 0, 0)

    async def _essay_reads(self, keys: list[EssayPageKey | _TallyKey]) -> list[Page[EssayRow] | Tally]:
        """One statement per page shape, carrying the tallies of its filter (and, unfiltered, the phase progress);
        one more per filter whose tallies no page carries."""
        self._tags.batches.update(k.batch_id for k in keys)
        pages = _grouped([k for k in keys if isinstance(k, EssayPageKey)], lambda k: (k.first, k.after, k.phase_filter))
        tallies = [k for k in keys if isinstance(k, _TallyKey)]
        # The progress statement counts every essay too: unfiltered counts asked beside it need nothing more.
        with_progress = any(k.progress for k in tallies)

        async def read(conn: AsyncConnection) -> dict[EssayPageKey | _TallyKey, Page[EssayRow] | Tally]:
            tallied = _grouped(tallies, lambda k: k.phase_filter)  # what no statement has counted yet

            def tally_ids(phase_filter: PhaseFilter | None) -> list[str]:
                return list(dict.fromkeys(k.batch_id for k in tallied.pop(phase_filter, [])))

            found: dict[EssayPageKey | _TallyKey, Page[EssayRow] | Tally] = {}
            counts: dict[tuple[str, PhaseFilter | None], Tally] = {}
            for (first, after, phase_filter), group in pages.items():
                ids = [k.batch_id for k in group]
                carried = tally_ids(phase_filter)
                progress = with_progress and phase_filter is None
                if carried:
                    page_of, tally_of = await reads.essay_pages_and_tallies(
                        conn, ids, first, after, phase_filter, carried, progress
                    )
                    counts.update(((batch_id, phase_filter), tally) for batch_id, tally in tally_of.items())
                else:
                    page_of = await reads.essay_pages(conn, ids, first, after, phase_filter)
                found.update((k, page_of[k.batch_id]) for k in group)
            for phase_filter in list(tallied):
                ids = tally_ids(phase_filter)
                if with_progress and phase_filter is None:
                    progress_of = await reads.phase_progress(conn, ids)
                    counts.update(((batch_id, None), tally) for batch_id, tally in progress_of.items())
                else:
                    count_of = await reads.count_essays(conn, ids, phase_filter)
                    counts.update(((batch_id, phase_filter), count) for batch_id, count in count_of.items())
            found.update((k, counts[k.batch_id, k.phase_filter]) for k in tallies)
            return found

        found = await self._read("essays", len(keys), read)
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
