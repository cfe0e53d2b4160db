"""A tiny table read through the real request session, so the tests control exactly what a replica lags behind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.cache import Executed
from app.reads.session import ReadSession
from app.replicas import Replicas
from infra import cache_keys as ck


async def create_probe(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE probe (id text PRIMARY KEY, v int NOT NULL)"))


async def set_value(engine: AsyncEngine, probe_id: str, value: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO probe VALUES (:id, :v) ON CONFLICT (id) DO UPDATE SET v = excluded.v"),
            {"id": probe_id, "v": value},
        )


async def read_value(conn: AsyncConnection, probe_id: str) -> int | None:
    result = await conn.execute(text("SELECT v FROM probe WHERE id = :id"), {"id": probe_id})
    value = result.scalar_one_or_none()
    return None if value is None else int(value)


def execution(primary: AsyncEngine, replicas: Replicas, probe_id: str) -> Callable[[], Awaitable[Executed]]:
    """A request's execution as the endpoints run it: a fresh session, tagged as a read of batch `probe_id`, with
    the replica's replay position when a replica served it."""

    async def execute() -> Executed:
        session = ReadSession(primary, replicas=replicas)
        try:
            value = await session.run(lambda conn: read_value(conn, probe_id))
        finally:
            await session.close()
        body = orjson.dumps({"data": {"v": value}})
        return Executed(body, ck.read_tags([probe_id], []), replayed=session.replayed)

    return execute


def value_of(body: bytes) -> int | None:
    value = orjson.loads(body)["data"]["v"]
    return None if value is None else int(value)
