"""A cache hit's answer made from the stored bytes: `extensions.cache` is spliced onto them, so a hit is answered
without parsing or re-encoding the stored document (`app.cache.with_cache_extension` does it by parsing, for bodies
of any shape). The answer is the stored bytes but their closing brace, then the tail; the gzip form is made the same
way from the stored bytes' memoized compressed head (app/compression.py)."""

from __future__ import annotations

import orjson

from app.cache import Served, cache_extension


def extension_tail(served: Served) -> bytes:
    """What follows a stored body (exactly `{"data":…}`, as the endpoint stores it) without its closing brace."""
    return b',"extensions":{"cache":' + orjson.dumps(cache_extension(served)) + b"}}"


def spliced(data_only: bytes, tail: bytes) -> bytes:
    """The stored body with `tail` (`extension_tail`) in place of its closing brace; it is copied once."""
    return b"".join((memoryview(data_only)[:-1], tail))
