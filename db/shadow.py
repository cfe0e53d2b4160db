"""The shadow projection `ras rebuild` fills, and the one transaction that swaps it in for the live one.

The shadow is a schema of its own (`ras_shadow`) with the tables of the same Alembic revisions as the live ones
(db/migrate.py migrates it with the schema first on the search path). The rebuild writes it through an engine whose
search path is that schema alone, so the projection code, which names tables unqualified, needs no change.

The swap moves tables, not rows: in one transaction, every live table goes to `ras_old` and every shadow table to
the live schema (`ALTER TABLE … SET SCHEMA`: indexes, constraints and the quarantine id sequence go along). It
commits all at once or not at all, so a crash at any moment leaves either the old projection or the new one, never a
mixture. It first takes ACCESS EXCLUSIVE locks on every live table, in the order the consumer writes them
(positions last), with a short statement timeout: if a consumer transaction or a long read holds one, the swap gives
up within the timeout and is retried later rather than queueing readers behind it for long or deadlocking with the
consumer (a waiting swap would hold some tables while the consumer waits for them). Once it holds the locks the live
consumer cannot commit, so the positions it reads are final; it swaps only if the shadow is at or past them on
every partition (records the shadow holds beyond them are applied again by the live consumer, which the projection
tolerates by construction: re-applying a record changes nothing).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from db.tables import Base

SHADOW_SCHEMA = "ras_shadow"
OLD_SCHEMA = "ras_old"
# Every projection table, in the order the swap locks them: the consumer's transactions write the data tables
# first and their positions last.
TABLES = ("batches", "batch_facts", "essays", "phase_results", "quarantine", "consumer_positions")
assert set(TABLES) == set(Base.metadata.tables), "db/shadow.py must list every table of the projection"
LOCK_TIMEOUT_MS = 300
"""How long the swap waits for its locks before giving up for now. Below PostgreSQL's default deadlock_timeout
(1 s), so a reader that waits behind the swap is never the one a deadlock check would cancel."""

_CANCELLED = ("57014", "55P03")  # query_canceled (statement_timeout), lock_not_available

Positions = dict[tuple[str, int], int]


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def shadow_engine(database_url: str) -> AsyncEngine:
    """An engine whose connections see the shadow schema's tables under their plain names."""
    return create_async_engine(
        database_url, pool_size=2, connect_args={"server_settings": {"search_path": SHADOW_SCHEMA}}
    )


async def live_schema(conn: AsyncConnection) -> str:
    """The schema the service's unqualified table names resolve to (normally `public`)."""
    found = await conn.scalar(
        text("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = to_regclass('consumer_positions')")
    )
    if found is None:
        raise RuntimeError("no consumer_positions table on the search path: run `ras migrate` first")
    return str(found).strip('"')


async def revision(conn: AsyncConnection, schema: str) -> str | None:
    found = await conn.scalar(text(f"SELECT version_num FROM {quoted(schema)}.alembic_version"))  # noqa: S608
    return None if found is None else str(found)


async def reset(conn: AsyncConnection) -> None:
    """Start from an empty shadow schema; leftovers of an earlier, interrupted rebuild go."""
    await conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted(SHADOW_SCHEMA)} CASCADE"))
    await conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted(OLD_SCHEMA)} CASCADE"))
    await conn.execute(text(f"CREATE SCHEMA {quoted(SHADOW_SCHEMA)}"))


async def drop(conn: AsyncConnection, schema: str) -> None:
    await conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted(schema)} CASCADE"))


async def positions(conn: AsyncConnection, schema: str) -> Positions:
    rows = await conn.execute(
        text(f"SELECT topic, partition, next_offset FROM {quoted(schema)}.consumer_positions")  # noqa: S608
    )
    return {(r.topic, r.partition): r.next_offset for r in rows}


def behind(shadow: Positions, live: Positions) -> Positions:
    """Partitions where the shadow has not reached the live position, with how many records it lacks."""
    return {tp: offset - shadow.get(tp, 0) for tp, offset in live.items() if shadow.get(tp, 0) < offset}


async def swap(engine: AsyncEngine, live: str) -> Positions | None:
    """Swap the shadow tables in, atomically. Returns None when done, else what the shadow lacks (it must catch up
    before the next attempt); an empty dict when the locks were not free in time."""
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await conn.execute(text(f"SET LOCAL statement_timeout = {LOCK_TIMEOUT_MS}"))
            names = ", ".join(f"{quoted(live)}.{quoted(t)}" for t in TABLES)
            await conn.execute(text(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE"))
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
            lacking = behind(await positions(conn, SHADOW_SCHEMA), await positions(conn, live))
            if lacking:
                await transaction.rollback()
                return lacking
            await conn.execute(text(f"CREATE SCHEMA {quoted(OLD_SCHEMA)}"))
            for table in TABLES:
                await conn.execute(text(f"ALTER TABLE {quoted(live)}.{quoted(table)} SET SCHEMA {quoted(OLD_SCHEMA)}"))
            for table in TABLES:
                await conn.execute(
                    text(f"ALTER TABLE {quoted(SHADOW_SCHEMA)}.{quoted(table)} SET SCHEMA {quoted(live)}")
                )
            await transaction.commit()
            return None
        except DBAPIError as exc:
            await transaction.rollback()
            if getattr(exc.orig, "sqlstate", None) in _CANCELLED:
                return {}
            raise
