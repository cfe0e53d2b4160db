"""Schema migrations with Alembic, configured in code so no alembic.ini has to be found at run time."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's ini parser treats % as interpolation; a password may contain one.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head", schema: str | None = None) -> None:
    """Migrate the database to `revision`. Runs its own event loop, so call it from sync code or a thread.

    With `schema`, the tables and the version table are created in that (existing) schema instead of the default
    one: `ras rebuild` builds its shadow projection this way, from the same revisions as the live one.
    """
    config = alembic_config(database_url)
    if schema is not None:
        config.attributes["schema"] = schema
    command.upgrade(config, revision)


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


async def upgrade_async(database_url: str, revision: str = "head", schema: str | None = None) -> None:
    await asyncio.to_thread(upgrade, database_url, revision, schema)
