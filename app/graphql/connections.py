"""Cursor connections over batch and essay pages: the objects behind `BatchConnection` and `EssayConnection`.

A connection object only records which page was asked for; its fields load the page (or the count) through the
request's loaders when, and only if, a query selects them. Edges, nodes and pageInfo share one loaded page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import strawberry

from app.graphql.cursors import batch_cursor, essay_cursor
from app.reads.context import RequestContext
from app.reads.loaders import BatchPageKey, EssayCountKey, EssayPageKey
from db.rows import BatchRow, EssayRow, Page

T = TypeVar("T")
Info = strawberry.Info[RequestContext, None]


@dataclass(frozen=True, slots=True)
class Edge(Generic[T]):
    cursor: str
    node: T


@dataclass(frozen=True, slots=True)
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


def _page_info(page: Page[T], after: object, cursor: Callable[[T], str]) -> PageInfo:
    rows = page.rows
    return PageInfo(
        has_next_page=page.has_next,
        # Forward-only paging: items precede this page exactly when it starts after a cursor.
        has_previous_page=after is not None,
        start_cursor=cursor(rows[0]) if rows else None,
        end_cursor=cursor(rows[-1]) if rows else None,
    )


def _edges(rows: Sequence[T], cursor: Callable[[T], str]) -> list[Edge[T]]:
    return [Edge(cursor(row), row) for row in rows]


def _batch_cursor(row: BatchRow) -> str:
    return batch_cursor(row.created_at, row.batch_id)


def _essay_cursor(row: EssayRow) -> str:
    return essay_cursor(row.essay_id)


@dataclass(frozen=True, slots=True)
class BatchList:
    key: BatchPageKey


async def _batch_page(root: BatchList, info: Info) -> Page[BatchRow]:
    return await info.context.loaders.batch_page(root.key)


async def batch_edges(root: BatchList, info: Info) -> list[Edge[BatchRow]]:
    return _edges((await _batch_page(root, info)).rows, _batch_cursor)


async def batch_nodes(root: BatchList, info: Info) -> list[BatchRow]:
    return (await _batch_page(root, info)).rows


async def batch_page_info(root: BatchList, info: Info) -> PageInfo:
    return _page_info(await _batch_page(root, info), root.key.after, _batch_cursor)


async def batch_total(root: BatchList, info: Info) -> int:
    return await info.context.loaders.batch_count(root.key.query)


@dataclass(frozen=True, slots=True)
class EssayList:
    key: EssayPageKey


async def _essay_page(root: EssayList, info: Info) -> Page[EssayRow]:
    return await info.context.loaders.essay_page(root.key)


async def essay_edges(root: EssayList, info: Info) -> list[Edge[EssayRow]]:
    return _edges((await _essay_page(root, info)).rows, _essay_cursor)


async def essay_nodes(root: EssayList, info: Info) -> list[EssayRow]:
    return (await _essay_page(root, info)).rows


async def essay_page_info(root: EssayList, info: Info) -> PageInfo:
    return _page_info(await _essay_page(root, info), root.key.after, _essay_cursor)


async def essay_total(root: EssayList, info: Info) -> int:
    key = EssayCountKey(root.key.batch_id, root.key.phase_filter)
    return await info.context.loaders.essay_count(key)
