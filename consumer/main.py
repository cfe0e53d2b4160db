"""The consumer process: `run` composes it, `consume` runs it until SIGTERM/SIGINT (what `ras consume` does).

`ras dev` runs the same composition beside the API, with a stop event of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import structlog
from opentelemetry.trace import Tracer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.apply import OnApplied
from consumer.eviction import Evictor
from consumer.notify import Publisher, chain
from consumer.ops import ops_app, ops_server
from consumer.runner import ConsumerLoop
from consumer.tracing import traced_step
from db.engine import create_projection_engine
from db.replication import insert_lsn
from infra.failures import broker, database, reaching
from infra.http_server import PortUnavailable, listen
from infra.settings import Settings
from infra.tracing import Tracing, from_environment
from infra.wait import broker_answers, wait_for

log = structlog.get_logger(__name__)


def consume(settings: Settings) -> None:
    """Run the consumer until SIGTERM or SIGINT, then finish the transaction in hand and leave the group."""

    async def until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop, tracing)

    tracing = from_environment("ras-consumer")  # on when the OTEL_* variables say so (infra/tracing.py)
    try:
        asyncio.run(until_signalled())
    finally:
        if tracing is not None:
            tracing.shutdown()  # exports the spans still batched


def _wal_position(engine: AsyncEngine) -> Callable[[], Awaitable[int]]:
    async def read() -> int:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")  # one statement: no BEGIN, no ROLLBACK
            return await insert_lsn(conn)

    return read


async def run(settings: Settings, stop: asyncio.Event, tracing: Tracing | None = None) -> None:
    """The consumer with everything around it, until `stop` is set: the ops server (/metrics, /healthz, /readyz),
    the wait for PostgreSQL and the broker, a new cache epoch and a resync of live updates (the last run may have
    crashed between a commit and its eviction or publication), then the loop; then everything closed again.
    `tracing`: each transaction is a span, its eviction and publication spans under it (consumer/tracing.py)."""
    engine = create_projection_engine(settings.database_url, pool_size=2, pool_pre_ping=True)
    # With read replicas, each eviction records the primary's WAL position for the API's replica guard.
    position = _wal_position(engine) if settings.database_read_urls else None
    evictor = Evictor.from_settings(settings, position) if settings.cache_enabled else None
    publisher = Publisher.from_settings(settings, engine) if settings.live_updates_enabled else None
    tracer = tracing.tracer("consumer") if tracing is not None else None
    # Evict before publishing: a client pushed an update may query at once, and must not get the old cached answer.
    on_applied = chain(
        _step(tracer, "evict", evictor.evict if evictor is not None else None),
        _step(tracer, "publish", publisher.publish if publisher is not None else None),
    )
    # Partitions taken over from a member that died between a commit and its eviction: hide what it did not evict.
    on_gained = evictor.bump_epoch if evictor is not None else None
    consumer = ConsumerLoop(settings, engine, on_applied=on_applied, tracer=tracer, on_gained=on_gained)
    async with contextlib.AsyncExitStack() as closing:
        closing.push_async_callback(engine.dispose)
        if evictor is not None:
            closing.push_async_callback(evictor.aclose)
        if publisher is not None:
            closing.push_async_callback(publisher.aclose)
        await closing.enter_async_context(_ops(settings, engine, consumer))
        closing.push_async_callback(consumer.close)
        if not await _unless_stopped(stop, _prepare(settings, engine, evictor, publisher)):
            return
        stopping = asyncio.create_task(_stop_on(stop, consumer))
        try:
            await consumer.run()
        finally:
            stopping.cancel()


def _step(tracer: Tracer | None, name: str, step: OnApplied | None) -> OnApplied | None:
    return step if step is None or tracer is None else traced_step(tracer, name, step)


async def wait_for_dependencies(settings: Settings, engine: AsyncEngine) -> None:
    """Wait for PostgreSQL and the broker, for at most RAS_STARTUP_TIMEOUT_SECONDS each; a `CommandFailure` naming
    the one that does not answer."""

    async def probe_database() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    where = engine.url.render_as_string(hide_password=True)
    with reaching(database(settings.database_url)):
        await wait_for("database", where, probe_database, settings.startup_timeout_seconds)
    await wait_for_broker(settings)


async def wait_for_broker(settings: Settings) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    with reaching(broker(bootstrap)):
        await wait_for("kafka", bootstrap, lambda: broker_answers(bootstrap), settings.startup_timeout_seconds)


async def _prepare(
    settings: Settings, engine: AsyncEngine, evictor: Evictor | None, publisher: Publisher | None
) -> None:
    await wait_for_dependencies(settings, engine)
    if evictor is not None:
        # A crash between a commit and its eviction (the last run's) left entries nothing will evict: hide them.
        await evictor.bump_epoch()
    if publisher is not None:
        await publisher.resync()  # likewise for the last run's publications: subscribers re-read


async def _unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> bool:
    """Run `work` unless `stop` is set first (then it is cancelled); whether it ran to the end."""
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False
    task.result()
    return True


async def _stop_on(stop: asyncio.Event, consumer: ConsumerLoop) -> None:
    await stop.wait()
    consumer.stop()


@contextlib.asynccontextmanager
async def _ops(settings: Settings, engine: AsyncEngine, consumer: ConsumerLoop) -> AsyncIterator[None]:
    """The ops server on RAS_CONSUMER_METRICS_PORT while the consumer runs; none when the port is 0 or taken."""
    sock = _ops_socket(settings)
    if sock is None:
        yield
        return
    server = ops_server(ops_app(engine, consumer.assigned.is_set), settings.host, settings.consumer_metrics_port)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await serving


def _ops_socket(settings: Settings) -> socket.socket | None:
    """The consumer's metrics/health port, bound; None when it is off or taken (the consumer's work matters more
    than its metrics, so a taken port is logged, not fatal)."""
    if not settings.consumer_metrics_port:
        return None
    try:
        return listen(settings.host, settings.consumer_metrics_port, "RAS_CONSUMER_METRICS_PORT")
    except PortUnavailable as exc:
        log.error("consumer metrics/health server not started", reason=str(exc))
        return None
