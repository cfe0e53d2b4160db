"""db/engine.py: JSON columns decoded by orjson (values the consumer stored come back as they were parsed), and
the consumer's engine planning every statement for its parameters."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_projection_engine

_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
)
_values = st.recursive(
    _scalars | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(_values)
def test_what_orjson_wrote_reads_back_equal(value: Any) -> None:
    assert orjson.loads(orjson.dumps(value)) == value


async def test_jsonb_round_trip_through_the_engine(engine: AsyncEngine) -> None:
    # The consumer parses payloads with orjson: an integer beyond 64 bits arrives as a float, which jsonb stores
    # as numeric and prints without an exponent; it must read back as that float, which the API can encode.
    parsed = orjson.loads(b'{"big": 123456789012345678901234567890, "n": 7, "x": 0.1, "s": "\\u00e9"}')
    async with engine.connect() as conn:
        stored = await conn.execute(
            text("SELECT CAST(:v AS jsonb) AS v, CAST(:v AS jsonb)::text AS printed"),
            {"v": orjson.dumps(parsed).decode()},
        )
        row = stored.one()
    assert "e+" not in row.printed  # PostgreSQL printed the number out in full
    assert row.v == parsed
    assert type(row.v["big"]) is float
    assert orjson.loads(orjson.dumps(row.v)) == parsed  # and the API's encoder writes it


async def test_the_projection_engine_plans_every_statement_for_its_parameters(database_url: str) -> None:
    engine = create_projection_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one() == "force_custom_plan"
    finally:
        await engine.dispose()
