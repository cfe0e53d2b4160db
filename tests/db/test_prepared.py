"""db/prepared.py: a statement compiled once answers what SQLAlchemy's ordinary execution answers, binding named
parameters (a repeated one once), array parameters and values bound when the statement was built, and compiles
nothing on later runs."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import ARRAY, Integer, Text, any_, bindparam, func, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select

from db.prepared import Prepared

_WORDS = func.unnest(bindparam("words", type_=ARRAY(Text))).table_valued("word").render_derived(name="words")
_STATEMENT = (
    select(_WORDS.c.word, literal("built-in").label("fixed"))
    .where(
        _WORDS.c.word == any_(bindparam("wanted", type_=ARRAY(Text))),
        func.length(_WORDS.c.word) >= bindparam("shortest", type_=Integer),
        _WORDS.c.word != bindparam("skip", type_=Text),
        func.upper(_WORDS.c.word) != func.upper(bindparam("skip", type_=Text)),
    )
    .order_by(_WORDS.c.word)
)
PARAMS = {"words": ["ant", "bee", "cat", "dog", "eel"], "wanted": ["bee", "cat", "eel", "yak"], "shortest": 3}


async def test_it_answers_as_ordinary_execution(engine: AsyncEngine) -> None:
    prepared = Prepared(_STATEMENT)
    async with engine.connect() as conn:
        expected = (await conn.execute(_STATEMENT, {**PARAMS, "skip": "cat"})).fetchall()
        got = await prepared.run(conn, {**PARAMS, "skip": "cat"})
    assert [tuple(row) for row in got] == [tuple(row) for row in expected] == [("bee", "built-in"), ("eel", "built-in")]


async def test_later_runs_compile_nothing(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = Prepared(_STATEMENT)
    compiled = 0
    original = Select.compile

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal compiled
        compiled += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Select, "compile", counted)
    async with engine.connect() as conn:
        answers = [await prepared.run(conn, {**PARAMS, "skip": skip}) for skip in ("bee", "cat", "eel")]
    assert compiled == 1
    assert [[row[0] for row in rows] for rows in answers] == [["cat", "eel"], ["bee", "eel"], ["bee", "cat"]]
