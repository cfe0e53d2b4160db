"""Where a server stands in the write-ahead log, as a number of bytes: what read replicas are compared by.

A replica's `pg_last_wal_replay_lsn()` is the end of the last WAL record it has applied, updated once the record's
effects are in place: a transaction whose commit record ends at or before it is visible to every snapshot taken
after the reading. The primary's `pg_current_wal_insert_lsn()`, read after a commit returned, is at or past the end
of that commit's record. app/cache.py's replica guard rests on these two facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# LSNs as numbers (pg_lsn minus the origin, an exact numeric): bytes of WAL since the cluster began.
_REPLAY = "SELECT pg_last_wal_replay_lsn() - '0/0'"
_INSERT = text("SELECT pg_current_wal_insert_lsn() - '0/0'")
_STATUS = text(
    "SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn() - '0/0' AS replayed,"
    " CASE WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END AS behind_seconds"
)


async def replay_lsn(conn: AsyncConnection) -> int:
    """How far `conn`'s server has replayed, read outside any transaction (one round trip on the driver's
    connection, so the caller can still open its own transaction after it). 0 on a server that is not a standby:
    nothing about what it has seen can be vouched for by this number."""
    raw = await conn.get_raw_connection()
    value = await raw.driver_connection.fetchval(_REPLAY)  # type: ignore[union-attr]
    return 0 if value is None else int(value)


async def insert_lsn(conn: AsyncConnection) -> int:
    """The primary's current WAL insert position: past the end of every commit that has returned."""
    return int((await conn.execute(_INSERT)).scalar_one())


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    standby: bool
    replayed: int | None
    behind_seconds: float


async def replica_status(conn: AsyncConnection) -> ReplicaStatus:
    """Whether `conn`'s server is a standby, how far it has replayed, and for how long it has had received WAL left
    to replay (0 while it has none: an idle primary makes a replica look old by the timestamp alone)."""
    row = (await conn.execute(_STATUS)).one()
    replayed = None if row.replayed is None else int(row.replayed)
    return ReplicaStatus(bool(row.standby), replayed, float(row.behind_seconds or 0))
