"""The engine every process reads and writes through: SQLAlchemy's asyncpg engine, with JSON columns decoded by
orjson (several times faster than the json module; a list of 100 batches decodes ~350 JSON values).

Decoding with orjson gives back what was stored: every JSON value in these tables was parsed from the wire by
orjson in the consumer (consumer/pure/decode.py), which reads an integer beyond 64 bits as a float. PostgreSQL may print
such a float back without its exponent (jsonb keeps numbers as numeric), and orjson reads that as the same float,
where the json module would make a big int that the API's orjson encoder could not write.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """`create_async_engine(url, **options)` with JSON columns decoded by orjson."""
    return create_async_engine(url, json_deserializer=orjson.loads, **options)


def create_projection_engine(url: str, **options: Any) -> AsyncEngine:
    """`create_engine` for the consumer: every statement is planned for its parameters (`plan_cache_mode`). A
    generic plan of `batch_id = ANY(:ids)` made while the tables were small kept scanning them as they grew: a
    transaction's time doubled within a minute of a new database."""
    custom_plans = {"server_settings": {"plan_cache_mode": "force_custom_plan"}}
    return create_engine(url, connect_args=custom_plans, **options)
