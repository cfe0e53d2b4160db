"""The `ras` command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from ras.logs import configure_logging
from ras.settings import Settings, load_settings


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from db.migrate import upgrade

    upgrade(settings.database_url, args.revision)
    print(f"database migrated to {args.revision}")
    return 0


async def _consume(settings: Settings) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from consumer.runner import ProjectionConsumer

    engine = create_async_engine(settings.database_url, pool_size=2, pool_pre_ping=True)
    consumer = ProjectionConsumer(settings, engine)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.stop)
    try:
        await consumer.run()
    finally:
        await engine.dispose()


def _produce_demo(settings: Settings, args: argparse.Namespace) -> int:
    from ras.produce import produce_demo

    count = asyncio.run(
        produce_demo(settings.kafka_bootstrap_servers, args.batches, args.users, args.rate, not args.quiet)
    )
    print(f"produced {count} events for {args.batches} batches of {args.users} teachers")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ras",
        description="Result Aggregator Service: projects the platform's events into PostgreSQL and serves them.",
        epilog="Configuration comes from RAS_* environment variables; see docs/configuration.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    migrate = commands.add_parser("migrate", help="apply database migrations (Alembic upgrade)")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    commands.add_parser(
        "consume", help="run the Kafka consumer until SIGTERM/SIGINT", description="Run the projection consumer."
    )
    demo = commands.add_parser(
        "produce-demo",
        help="produce a realistic demo stream of platform events onto the broker",
        description="Produce several teachers' batches through spellcheck and CJ assessment, both contract "
        "generations, as real events on RAS_KAFKA_BOOTSTRAP_SERVERS.",
    )
    demo.add_argument("--batches", type=int, default=24, help="number of batches (default: 24)")
    demo.add_argument("--users", type=int, default=4, help="number of teachers owning them (default: 4)")
    demo.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    if args.command == "migrate":
        return _migrate(settings, args)
    if args.command == "produce-demo":
        return _produce_demo(settings, args)
    if args.command == "consume":
        asyncio.run(_consume(settings))
        return 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
