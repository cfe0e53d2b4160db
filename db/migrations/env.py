"""Alembic environment: runs migrations over an async engine built from the URL the caller configured."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from db.tables import Base

config = context.config
target_metadata = Base.metadata
# `ras rebuild` migrates a shadow schema (db/shadow.py): every unqualified name, the version table included, then
# lands there because it is first (and alone) on the search path.
schema: str | None = config.attributes.get("schema")


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, compare_type=True, version_table_schema=schema
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "", connect_args=connect_args)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
