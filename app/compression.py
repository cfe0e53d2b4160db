"""Response compression: gzip (the standard library's zlib) for bodies of at least RAS_COMPRESSION_MIN_BYTES when the
request's Accept-Encoding prefers it, with a cached answer's compressed form made once per process, not per hit.

Negotiation follows RFC 9110 §12.5.3: gzip (or its alias x-gzip) is sent when its weight, named or through `*`, is
above 0 and at least that of identity (named, or through `*`; an identity the header does not mention ranks below
every coding it names). `gzip;q=0`, `identity;q=1, gzip;q=0.5` or no header at all get the body as it is. When no
coding is acceptable, not even identity, the body still goes as it is: a read is better answered than refused.
Every response whose body could have been compressed carries `Vary: Accept-Encoding`, whether or not it was.

A cached answer's bytes are the same on every hit, but a GraphQL hit appends `extensions.cache` (its age changes
with every request) after them. So what is kept is a *head*: the stored bytes (a GraphQL answer without its closing
brace) deflated and sync-flushed to a byte boundary, with their CRC-32 and length. A response is the gzip header,
the head, the request's own tail as a final stored (uncompressed) deflate block, and a trailer whose CRC is the
head's extended over the tail: one valid gzip member, with no compression work per hit. Heads are kept in a bounded
least-recently-used memo keyed by the cached entry's content digest (app/cache.py stores it with the entry), so two
entries with the same bytes share a head and an entry rewritten with other bytes can never get a stale one.

Only gzip: brotli and zstd would each need a package (`brotli`, `zstandard`) for a gain on JSON the gateway's
clients may not even ask for; Python 3.14's `compression.zstd` makes zstd a standard-library option later.
"""

from __future__ import annotations

import functools
import gzip
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from starlette.responses import Response

from app.metrics import GZIP_COMPRESSIONS, GZIP_MEMO_HITS
from infra.settings import Settings

GZIP = "gzip"
ACCEPT_ENCODING = "accept-encoding"

LEVEL = 6
"""zlib's default: answers are compressed once per cached entry and process, or once per uncached answer."""
ASSET_LEVEL = 9
"""GraphiQL's files are compressed once per process: the smallest output is worth the time."""

# RFC 1952: magic, deflate, no flags, no modification time, no extra flags, operating system unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_STORED_BLOCK_MAX = 0xFFFF
_NO_BODY_STATUSES = frozenset({204, 304})
_VARY_HEADERS = ((b"vary", b"Accept-Encoding"),)
_ENCODED_HEADERS = (*_VARY_HEADERS, (b"content-encoding", GZIP.encode()))


@functools.lru_cache(maxsize=256)
def prefers_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value makes gzip the coding to send (module docstring). Items that do not parse
    (a malformed weight, say) are ignored. Memoized: clients send the same few values."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, parameters = item.partition(";")
        weight = _weight(parameters)
        coding = coding.strip().lower()
        if coding and weight is not None:
            weights.setdefault(coding, weight)
    anything = weights.get("*")
    gzip_weight = weights.get(GZIP, weights.get("x-gzip", anything or 0.0))
    identity_weight = weights.get("identity", anything or 0.0)
    return gzip_weight > 0 and gzip_weight >= identity_weight


def _weight(parameters: str) -> float | None:
    """The `q` of an item's parameters (1 when absent), or None when it is not a weight (RFC 9110 §12.4.2)."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() != "q":
            continue
        value = value.strip()
        try:
            weight = float(value)
        except ValueError:
            return None
        return weight if 0 <= weight <= 1 else None
    return 1.0


@dataclass(frozen=True, slots=True)
class GzipHead:
    """Bytes deflated and flushed to a byte boundary, with their CRC-32 and length: `member(tail)` completes them
    into one gzip member of those bytes followed by `tail`, without compressing anything."""

    deflated: bytes
    crc: int
    size: int

    @classmethod
    def of(cls, data: bytes | memoryview, level: int = LEVEL) -> GzipHead:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate: the framing is ours
        deflated = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return cls(deflated, zlib.crc32(data), len(data))

    def member(self, tail: bytes = b"") -> bytes:
        trailer = struct.pack("<II", zlib.crc32(tail, self.crc), (self.size + len(tail)) & 0xFFFFFFFF)
        return b"".join((_GZIP_HEADER, self.deflated, _stored_blocks(tail), trailer))


def _stored_blocks(data: bytes) -> bytes:
    """`data` as deflate stored blocks, the last one final (RFC 1951 §3.2.4), for a stream a sync flush left at a
    byte boundary. A few bytes of framing, where compressing a tail of some fifty bytes would set up a compressor
    (hundreds of KB of state) for every response."""
    blocks: list[bytes] = []
    for start in range(0, max(len(data), 1), _STORED_BLOCK_MAX):
        chunk = data[start : start + _STORED_BLOCK_MAX]
        final = start + _STORED_BLOCK_MAX >= len(data)
        blocks += (struct.pack("<BHH", final, len(chunk), len(chunk) ^ 0xFFFF), chunk)
    return b"".join(blocks)


class HeadMemo:
    """Heads of cached answers by (content digest, bytes kept), the least recently used dropped past `capacity`
    bytes of deflated data."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._heads: OrderedDict[tuple[str, int], GzipHead] = OrderedDict()
        self._size = 0

    def head(self, body: bytes, digest: str | None, keep: int) -> GzipHead:
        """The head of `body[:keep]`; memoized under `digest`, the digest of `body` (None: not memoized)."""
        key = (digest or "", keep)
        found = self._heads.get(key) if digest else None
        if found is not None:
            self._heads.move_to_end(key)
            GZIP_MEMO_HITS.inc()
            return found
        head = GzipHead.of(memoryview(body)[:keep])
        if digest is None:
            GZIP_COMPRESSIONS.labels("response").inc()
            return head
        GZIP_COMPRESSIONS.labels("cached").inc()
        if len(head.deflated) <= self._capacity:
            self._heads[key] = head
            self._size += len(head.deflated)
            while self._size > self._capacity:
                _, dropped = self._heads.popitem(last=False)
                self._size -= len(dropped.deflated)
        return head


class Compression:
    """The process's compression choices (settings) and its memo of cached answers' heads. One per app."""

    def __init__(self, enabled: bool, min_bytes: int, memo_bytes: int) -> None:
        self.enabled = enabled
        self.min_bytes = min_bytes
        self._memo = HeadMemo(memo_bytes)

    @classmethod
    def from_settings(cls, settings: Settings) -> Compression:
        return cls(settings.compression_enabled, settings.compression_min_bytes, settings.compression_memo_bytes)

    def wanted(self, accept_encoding: str | None) -> bool:
        """Whether a request with this Accept-Encoding (None: absent) is answered with gzip (above the threshold)."""
        return self.enabled and accept_encoding is not None and prefers_gzip(accept_encoding)

    def headers(self, encoded: bool) -> tuple[tuple[bytes, bytes], ...]:
        """The raw headers of an answer sent without a `Response` (GraphQL hits), `encoded` or not."""
        if not self.enabled:
            return ()
        return _ENCODED_HEADERS if encoded else _VARY_HEADERS

    def compresses(self, size: int, wanted: bool) -> bool:
        """Whether a body of `size` bytes is sent gzipped to a request that `wanted` it."""
        return wanted and size >= self.min_bytes

    def cached(self, body: bytes, digest: str | None, keep: int, tail: bytes = b"") -> bytes:
        """The gzip form of `body[:keep] + tail`, `body` being a cached answer's bytes and `digest` their content
        digest (None: not stored, so compressed without memoizing)."""
        return self._memo.head(body, digest, keep).member(tail)

    def response(self, response: Response, wanted: bool) -> Response:
        """`response` as sent: its body gzipped if `wanted` (`wanted()` of the request) and large enough, unless it
        is encoded already; `Vary: Accept-Encoding` on every response while compression is on. A streamed response
        (no `body`) is left as it is: its parts are sent as they come."""
        if not self.enabled or not hasattr(response, "body"):
            return response
        response.headers.add_vary_header("Accept-Encoding")
        if (
            not self.compresses(len(response.body), wanted)
            or response.status_code in _NO_BODY_STATUSES
            or "content-encoding" in response.headers
        ):
            return response
        GZIP_COMPRESSIONS.labels("response").inc()
        response.body = gzip.compress(bytes(response.body), LEVEL, mtime=0)
        response.headers["content-encoding"] = GZIP
        response.headers["content-length"] = str(len(response.body))
        return response
