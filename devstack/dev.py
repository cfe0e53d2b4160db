"""`ras dev`: the whole service on one machine with nothing installed but Python.

Starts PostgreSQL, Redis and a Kafka-protocol broker from PyPI packages (or uses the servers named by
RAS_DATABASE_URL, RAS_REDIS_URL, RAS_KAFKA_BOOTSTRAP_SERVERS when set), migrates, runs the consumer and the API in
this one process, produces a demo stream as real events, and prints where GraphiQL is, which headers to use, and
each server's address as `export RAS_…=` lines for other commands (`ras quarantine list`, psql, a second producer).
The API binds 127.0.0.1 unless --host or RAS_HOST says otherwise.
Ctrl-C stops everything it started, in reverse order; embedded servers' data is thrown away (the broker keeps
everything in memory, so a kept database would no longer match it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket

import structlog
import uvicorn
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from app.cache import QueryCache
from app.graphiql import Prefill
from app.live import EventHub
from app.main import create_app
from consumer.main import run as consume
from consumer.pure.topics import ALL_TOPICS, BATCH_ESSAYS_REGISTERED, ELS_BATCH_PHASE_OUTCOME
from db.migrate import upgrade_async
from devstack.demo import Message, demo_stream
from devstack.kafka import KafkaProcess
from devstack.postgres import PostgresProcess
from devstack.produce import produce
from devstack.redis import RedisProcess
from devstack.topics import create_topics
from infra.failures import broker, database, reaching
from infra.http_server import TaskServer, listen
from infra.settings import Settings, configuration_error, load_settings
from infra.tracing import from_environment

log = structlog.get_logger(__name__)


async def _servers(stack: contextlib.AsyncExitStack) -> dict[str, str]:
    """URLs of the three servers: from the environment, else embedded ones closed when the stack unwinds."""
    urls: dict[str, str] = {}
    if os.environ.get("RAS_DATABASE_URL"):
        urls["database_url"] = os.environ["RAS_DATABASE_URL"]
    else:
        postgres = PostgresProcess()
        stack.callback(postgres.close)
        await asyncio.to_thread(postgres.start)
        await asyncio.to_thread(postgres.create_database, "ras")
        urls["database_url"] = postgres.url_for("ras")
    if os.environ.get("RAS_REDIS_URL"):
        urls["redis_url"] = os.environ["RAS_REDIS_URL"]
    else:
        redis = RedisProcess()
        stack.callback(redis.close)
        await asyncio.to_thread(redis.start)
        urls["redis_url"] = redis.url
    if os.environ.get("RAS_KAFKA_BOOTSTRAP_SERVERS"):
        urls["kafka_bootstrap_servers"] = os.environ["RAS_KAFKA_BOOTSTRAP_SERVERS"]
    else:
        kafka = KafkaProcess()
        stack.callback(kafka.close)
        await asyncio.to_thread(kafka.start)
        urls["kafka_bootstrap_servers"] = kafka.bootstrap
    return urls


def _banner(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    service = settings.allowed_service_ids[0] if settings.allowed_service_ids else "<an allowed service id>"
    database = make_url(settings.database_url)
    # A password (only ever one the caller's RAS_DATABASE_URL gave) stays hidden: that caller already has it.
    shown_database = database.render_as_string(hide_password=True)
    libpq = database.set(drivername="postgresql").render_as_string(hide_password=True)
    return (
        f"\nRAS is running.\n"
        f"  GraphiQL:  http://{host}:{settings.port}/graphql\n"
        f"  headers:   X-Internal-API-Key: {settings.internal_api_key.get_secret_value()}\n"
        f"             X-Service-ID: {service}\n"
        f"             X-User-ID: teacher-01   (optional: see only that teacher's batches)\n"
        f"  REST:      http://{host}:{settings.port}/internal/v1/batches/user/teacher-01\n"
        f"  metrics:   http://{host}:{settings.port}/metrics (with the two headers)   readiness: /readyz\n"
        f"  PostgreSQL: {shown_database}\n"
        f"  Redis:      {settings.redis_url}\n"
        f"  broker:     {settings.kafka_bootstrap_servers}\n"
        f"Point other commands at this stack (paste into another shell):\n"
        f"  export RAS_DATABASE_URL={shlex.quote(shown_database)}\n"
        f"  export RAS_REDIS_URL={shlex.quote(settings.redis_url)}\n"
        f"  export RAS_KAFKA_BOOTSTRAP_SERVERS={shlex.quote(settings.kafka_bootstrap_servers)}\n"
        f"  export RAS_ENVIRONMENT=development\n"
        f"  ras quarantine list\n"
        f"  ras produce-demo --batches 5\n"
        f"  psql {shlex.quote(libpq)}\n"
        f"Press Ctrl-C to stop.\n"
    )


def _graphiql_prefill(settings: Settings, messages: list[Message]) -> Prefill:
    """What GraphiQL's page fills in: the banner's key, and ids from the demo about to be produced (a batch with
    both failed and assessed essays if there is one, an assessed essay of it and its teacher; the newest batch to
    watch live)."""
    owners: dict[str, str] = {}  # batch id → teacher, in the order produced
    spellchecked: dict[str, tuple[list[str], list[str]]] = {}  # batch id → (passed, failed) essay ids
    for message in messages:
        data = json.loads(message.value)["data"]
        if message.topic == BATCH_ESSAYS_REGISTERED:
            owners.setdefault(message.key.decode(), data["user_id"])
        elif message.topic == ELS_BATCH_PHASE_OUTCOME and data["phase_name"] == "spellcheck":
            passed = [essay["essay_id"] for essay in data["processed_essays"]]
            spellchecked[data["batch_id"]] = (passed, data["failed_essay_ids"])
    key = settings.internal_api_key.get_secret_value()
    if not owners:
        return Prefill(api_key=key)
    mixed = [b for b in owners if all(spellchecked.get(b, ((), ())))]
    assessed = [b for b in owners if spellchecked.get(b, ((), ()))[0]]
    batch = (mixed or assessed or list(owners))[0]
    variables: dict[str, object] = {"batchId": batch, "userId": owners[batch]}
    if batch in assessed:
        variables["essayId"] = spellchecked[batch][0][0]
    return Prefill(api_key=key, variables=variables, operations={"LiveBatchProgress": {"batchId": list(owners)[-1]}})


def _api_host(host: str | None) -> str:
    """Where `ras dev` binds: --host, else RAS_HOST when set, else 127.0.0.1 (a development key and GraphiQL are not
    for the network; `ras serve`'s default of all interfaces is a container's)."""
    if host is not None:
        return host
    configured = load_settings(database=False, environment="development")
    return configured.host if "host" in configured.model_fields_set else "127.0.0.1"


def _api_socket(host: str, port: int | None) -> socket.socket:
    """The API's port, bound before any server starts: a taken one is reported at once (`PortUnavailable`), as is
    any invalid variable (`ConfigurationError`; the database URL is checked once the servers are known)."""
    configured = load_settings(database=False, environment="development")
    return listen(host, configured.port if port is None else port, "--port (RAS_PORT)", "--host (RAS_HOST)")


async def run_dev(port: int | None, batches: int, rate: float | None, progress: bool, host: str | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bind = _api_host(host)
    with _api_socket(bind, port) as sock:
        async with contextlib.AsyncExitStack() as stack:
            urls = await _servers(stack)
            # The API's /metrics shows the consumer's metrics too (one process): no ops server of the consumer's.
            overrides: dict[str, object] = {
                **urls,
                "environment": "development",
                "consumer_metrics_port": 0,
                "host": bind,
            }
            if port is not None:
                overrides["port"] = port
            try:
                settings = Settings(**overrides)  # type: ignore[arg-type]
            except ValidationError as exc:
                raise configuration_error(exc) from None
            with reaching(database(settings.database_url)):
                await upgrade_async(settings.database_url)
            with reaching(broker(settings.kafka_bootstrap_servers)):
                await create_topics(settings.kafka_bootstrap_servers, ALL_TOPICS, partitions=4)
            await _run(settings, sock, stop, batches, rate, progress)


async def _run(
    settings: Settings, sock: socket.socket, stop: asyncio.Event, batches: int, rate: float | None, progress: bool
) -> None:
    messages = demo_stream(batches, users=4) if batches else []
    # Traced as `ras serve` and `ras consume` are when the OTEL_* variables say so, as one service (docs/tracing.md).
    tracing = from_environment("ras-dev")
    app = create_app(
        settings,
        cache=QueryCache.from_settings(settings, tracing.tracer("app.cache") if tracing is not None else None),
        events=EventHub.from_settings(settings),
        graphiql_prefill=_graphiql_prefill(settings, messages),
        tracing=tracing,
    )
    api = TaskServer(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            log_level="warning",
        )
    )
    # The consumer as `ras consume` composes it, stopped with everything else.
    tasks = [asyncio.create_task(consume(settings, stop, tracing)), asyncio.create_task(api.serve(sockets=[sock]))]
    try:
        while not api.started:
            if tasks[1].done():
                raise SystemExit(f"the API could not start on port {settings.port}")
            await asyncio.sleep(0.05)
        print(_banner(settings), flush=True)
        if batches:
            await produce(settings.kafka_bootstrap_servers, messages, rate, progress)
            print(f"demo: produced {len(messages)} events for {batches} batches", flush=True)
        await stop.wait()
        print("stopping…", flush=True)
    finally:
        api.should_exit = True
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tracing is not None:
            tracing.shutdown()
    print("stopped", flush=True)
