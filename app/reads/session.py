"""One database snapshot per request: every loader of a request reads the same committed state.

The consumer commits while requests run. Reading a batch page, its total and its essays on separate connections
could mix two states (a total that disagrees with the edges); one REPEATABLE READ, read-only transaction makes the
whole response consistent. Its connection is taken from the pool only when the first loader needs it, and loaders
take turns on it (a connection runs one statement at a time). A request answered by one statement alone (the REST
shim's) needs no such transaction, since a statement sees one state: `run_alone` saves its BEGIN and ROLLBACK, two
of the three round trips.

When PostgreSQL cannot be reached, reads raise `DatabaseUnavailable` (a clear, retryable error for the caller
instead of a masked internal one), and the app's circuit breaker makes the following requests fail at once rather
than each waiting on a dead server; one trial request per period probes for its return. A request that waited the
pool's whole timeout for a connection gets the same retryable error, without counting against the breaker.

With an admission gate (app/admission.py), the snapshot (or the lone statement) takes an execution slot before it
takes a connection, and `close` gives it back. A request refused there gets `Overloaded` (SERVICE_UNAVAILABLE,
retryable) from that read and from every later read of the same request, at once: it has read nothing, so it goes
no further.

With read replicas (app/replicas.py), the snapshot opens on a replica, after reading how far it has replayed
(`replayed`: what the cache's store is checked against, app/cache.py); if no replica answers, or none has applied the
positions the request waited for (`require`, checked inside the snapshot), it opens on the primary as without them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.admission import AdmissionGate
from app.errors import DatabaseUnavailable, Overloaded
from app.replicas import FALLBACKS, SNAPSHOTS, Replica, Replicas
from db.errors import is_transient
from db.positions import load_positions
from db.replication import replay_lsn
from infra.breaker import CircuitBreaker

T = TypeVar("T")


UNAVAILABLE_MESSAGE = "The database is unavailable right now; retry shortly."
BUSY_MESSAGE = "Every database connection of this server is busy; retry shortly."


class ReadSession:
    def __init__(
        self,
        engine: AsyncEngine,
        breaker: CircuitBreaker | None = None,
        gate: AdmissionGate | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        self._engine = engine
        self._replicas = replicas
        self._replica: Replica | None = None  # the replica the request reads, once it reads one
        self._required: dict[tuple[str, int], int] = {}
        self.replayed: int | None = None  # how far that replica had replayed before the snapshot opened
        self._breaker = breaker
        self._gate = gate
        self._admitted = False  # holds one of the gate's slots, given back by `close`
        self._refusal: Overloaded | None = None
        self._closing: asyncio.Future[None] | None = None
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self.unavailable = False

    def require(self, partition: tuple[str, int], next_offset: int) -> None:
        """Read only a state where `partition`'s stored next offset is at least `next_offset` (a read-your-writes
        wait found it so on the primary): a replica that has not applied it yet is passed over. Before the first
        read."""
        self._required[partition] = max(next_offset, self._required.get(partition, 0))

    async def run(self, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `read` on the request's connection, opening it (and its snapshot) on first use."""
        return await self._guarded(read, alone=False)

    async def run_alone(self, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `read`, one statement that is everything the request reads, outside a transaction. Only for a request
        that reads nothing else: two statements run this way could see two states."""
        return await self._guarded(read, alone=True)

    async def _guarded(self, read: Callable[[AsyncConnection], Awaitable[T]], alone: bool) -> T:
        if self._breaker is not None and not self._breaker.allow():
            self.unavailable = True
            raise DatabaseUnavailable(UNAVAILABLE_MESSAGE)
        try:
            result = await (self._alone(read) if alone else self._run(read))
        except Overloaded:
            self.unavailable = True  # not the database's fault: the breaker is left alone
            raise
        except PoolTimeout as exc:
            # Every pooled connection stayed in use for the pool's whole timeout: this process is overloaded, the
            # database may be fine. A retryable 503 rather than a masked INTERNAL error; not a breaker failure, or a
            # burst of load would fail every request for the breaker's pause as if the database were down.
            self.unavailable = True
            if self._breaker is not None and self._breaker.is_open:
                self._breaker.record_failure()  # this was the trial call: end the trial
            raise DatabaseUnavailable(BUSY_MESSAGE) from exc
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.unavailable = True
            if self._replica is not None:  # the replica failed mid-request, not the primary
                self._replica.failed(exc)
                raise DatabaseUnavailable(UNAVAILABLE_MESSAGE) from exc
            if self._breaker is not None:
                self._breaker.record_failure()
            raise DatabaseUnavailable(UNAVAILABLE_MESSAGE) from exc
        if self._breaker is not None:
            self._breaker.record_success()
        return result

    async def _run(self, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self._lock:
            if self._conn is None and self._closing is None:
                await self._admit()
            if self._closing is not None and self._conn is None:
                # A read that outlived its request: a loader's batch runs in a task of its own, which goes on when
                # the operation that wanted it was cancelled (its client left), even while it waits for a slot.
                # Nobody would close a snapshot opened now, so the read gets a connection for itself alone.
                async with self._engine.connect() as conn:
                    return await read(conn)
            if self._conn is None:
                self._conn = await self._open(snapshot=True)
            return await read(self._conn)

    async def _alone(self, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self._lock:  # the slot is held like a snapshot's, until `close`
            if self._closing is None:
                await self._admit()
            conn = await self._open(snapshot=False)
        try:
            return await read(conn)
        finally:
            await conn.close()

    async def _open(self, snapshot: bool) -> AsyncConnection:
        """A connection for the request's reads: a REPEATABLE READ snapshot begun on it, or (not `snapshot`)
        autocommit, so the driver sends no BEGIN and returning it sends no ROLLBACK. On a replica when one serves."""
        if self._replicas is not None:
            behind = False
            for replica in self._replicas.candidates():
                opened = await self._on_replica(replica, snapshot)
                if isinstance(opened, AsyncConnection):
                    return opened
                behind = behind or opened
            FALLBACKS.labels("behind" if behind else "down").inc()
        return await _begun(await self._engine.connect(), snapshot)

    async def _on_replica(self, replica: Replica, snapshot: bool) -> AsyncConnection | bool:
        """The request's connection on `replica`, or whether it was passed over for being behind (else down)."""
        try:
            conn = await replica.engine.connect()
        except Exception as exc:
            if not is_transient(exc):
                raise
            replica.failed(exc)
            return False
        try:
            # Before the snapshot: a lower bound of what it sees (db/replication.py).
            replayed = await replay_lsn(conn)
            await _begun(conn, snapshot, close=False)
            if self._required and not await self._has_required(conn):
                await conn.close()
                return True
        except Exception as exc:
            await conn.close()
            if not is_transient(exc):
                raise
            replica.failed(exc)
            return False
        except BaseException:
            await conn.close()
            raise
        replica.succeeded()
        SNAPSHOTS.labels(replica.name).inc()
        self._replica, self.replayed = replica, replayed
        return conn

    async def _has_required(self, conn: AsyncConnection) -> bool:
        stored = await load_positions(conn, self._required)
        return all(stored.get(partition, 0) >= offset for partition, offset in self._required.items())

    async def _admit(self) -> None:
        """Take an execution slot for the snapshot about to open (once), or raise this request's refusal."""
        if self._refusal is not None:
            raise self._refusal
        if self._gate is None or self._admitted:
            return
        try:
            await self._gate.acquire()
        except Overloaded as refusal:
            self._refusal = refusal
            raise
        if self._closing is not None:  # the request ended while this read waited: no snapshot for it
            self._gate.release()
            return
        self._admitted = True

    async def close(self) -> None:
        """End the snapshot, return the connection to the pool and the execution slot to the gate. Safe to call when
        nothing was read, and more than once. A read still in flight in another task (a loader's batch) is waited
        for: closed before it had opened the connection, the connection would be left to the garbage collector.

        The closing runs to its end even when the caller is cancelled while it waits (shielded): a slot that was
        never given back would be lost to the process for good."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            try:
                if conn is not None:
                    try:
                        await conn.rollback()
                    except Exception as exc:
                        if not is_transient(exc):  # a connection lost mid-request has nothing left to roll back
                            raise
                    finally:
                        await conn.close()
            finally:
                if self._admitted:
                    self._admitted = False
                    assert self._gate is not None
                    self._gate.release()


async def _begun(conn: AsyncConnection, snapshot: bool, close: bool = True) -> AsyncConnection:
    """`conn` with a read-only REPEATABLE READ transaction begun on it (`snapshot`), or set to autocommit; closed
    if that fails (unless `close` is False: the caller closes it)."""
    try:
        if snapshot:
            await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            await conn.begin()
        else:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
    except BaseException:
        if close:
            await conn.close()
        raise
    return conn
