"""Responses as they came over the wire, compressed bytes included (httpx decodes gzip on its own), and the check
that a body is one whole gzip member."""

from __future__ import annotations

import zlib
from typing import Any

import httpx

COMPRESSIONS = "ras_api_gzip_compressions_total"
MEMO_HITS = "ras_api_gzip_memo_hits_total"


async def fetch_raw(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent, before any content decoding."""
    async with client.stream(method, url, **kwargs) as response:
        raw = b"".join([part async for part in response.aiter_raw()])
    return response, raw


def gunzipped(data: bytes) -> bytes:
    """`data` decompressed, checked to be exactly one gzip member with nothing after it (some clients read only the
    first member of several)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    plain = decompressor.decompress(data)
    assert decompressor.eof and decompressor.unused_data == b"", "not one whole gzip member"
    return plain
