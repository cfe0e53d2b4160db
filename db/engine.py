"""The engine every process reads and writes through: SQLAlchemy's asyncpg engine, with JSON columns decoded by
orjson (several times faster than the json module; a list of 100 batches decodes ~350 JSON values).

orjson turns integers beyond 64 bits into floats where the json module keeps them exact; JSON columns hold what
producers sent, so a text with a run of 19 or more digits (the only way to spell such an integer) is decoded by
the json module instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_LONG_DIGITS = re.compile(r"\d{19}")


def loads(text: str | bytes) -> Any:
    if _LONG_DIGITS.search(text if isinstance(text, str) else text.decode()):
        return json.loads(text)
    return orjson.loads(text)


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """`create_async_engine(url, **options)` with this module's JSON decoding."""
    return create_async_engine(url, json_deserializer=loads, **options)
