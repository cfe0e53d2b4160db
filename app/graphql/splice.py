"""A cache hit's answer made from the stored bytes: `extensions.cache` is spliced onto them, so a hit is answered
without parsing or re-encoding the stored document (`app.cache.with_cache_extension` does it by parsing, for bodies
of any shape)."""

from __future__ import annotations

import orjson

from app.cache import Served, cache_extension


def spliced(data_only: bytes, served: Served) -> bytes:
    """A cacheable body (exactly `{"data":…}`, as the endpoint stores it) with `extensions.cache` appended to its
    bytes; it is copied once."""
    extension = orjson.dumps(cache_extension(served))
    return b"".join((memoryview(data_only)[:-1], b',"extensions":{"cache":', extension, b"}}"))
