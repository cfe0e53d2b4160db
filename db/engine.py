"""The engine every process reads and writes through: SQLAlchemy's asyncpg engine, with JSON columns decoded by
orjson (several times faster than the json module; a list of 100 batches decodes ~350 JSON values).

Decoding with orjson gives back what was stored: every JSON value in these tables was parsed from the wire by
orjson in the consumer (consumer/decode.py), which reads an integer beyond 64 bits as a float. PostgreSQL may print
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
