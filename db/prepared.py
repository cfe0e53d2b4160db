"""Read statements compiled once into the driver's SQL text, so a request builds and compiles nothing.

`AsyncConnection.execute(select)` walks the whole statement tree on every call to find its cache key before it
reaches the compiled form, and a statement built per request is also constructed first; on the read path that
cost more than PostgreSQL's work (docs/performance.md). A `Prepared` keeps the dialect's SQL text and the order
of its named parameters, and runs through `exec_driver_sql`, which keeps SQLAlchemy's transaction, error translation
and events (the tests' statement counts see it) and compiles nothing. asyncpg keeps the server-side prepared
statement per connection, keyed by that text.

Only public parts of SQLAlchemy are used (`compile`, `SQLCompiler.positiontup` and `binds`,
`exec_driver_sql`). A dialect with a named paramstyle has no `positiontup`: such a statement runs through
`execute` as built, the ordinary path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import CompoundSelect, Row, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

Statement = Select[*tuple[Any, ...]] | CompoundSelect[*tuple[Any, ...]]


class Prepared:
    """One read statement with named bind parameters; `run` binds them and executes the compiled text."""

    __slots__ = ("_defaults", "_dialect", "_names", "_sql", "statement")

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self._dialect: Dialect | None = None
        self._sql = ""
        self._names: tuple[str, ...] | None = None
        self._defaults: dict[str, Any] = {}

    def _compile(self, dialect: Dialect) -> None:
        compiled = self.statement.compile(dialect=dialect)
        positions = getattr(compiled, "positiontup", None)
        self._sql = compiled.string
        self._names = None if positions is None else tuple(positions)
        # Values bound when the statement was built (a phase name, say) travel with every execution.
        binds = getattr(compiled, "binds", {})
        self._defaults = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
        self._dialect = dialect

    async def run(self, conn: AsyncConnection, params: Mapping[str, Any]) -> Sequence[Row[*tuple[Any, ...]]]:
        """Every row the statement returns (fetched at once: cheaper than row by row)."""
        if self._dialect is not conn.dialect:
            self._compile(conn.dialect)
        if self._names is None:
            return (await conn.execute(self.statement, dict(params))).fetchall()
        values = tuple(params[name] if name in params else self._defaults[name] for name in self._names)
        return (await conn.exec_driver_sql(self._sql, values)).fetchall()
