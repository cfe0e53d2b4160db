"""app/compression.py without I/O: Accept-Encoding negotiation, the gzip member made of a head and a tail, the memo of
heads, and what a Starlette response becomes."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest
from starlette.responses import Response, StreamingResponse

from app.compression import Compression, GzipHead, HeadMemo, prefers_gzip
from tests.helpers.cache import Delta
from tests.helpers.compression import COMPRESSIONS, MEMO_HITS, gunzipped

BODY = b'{"data":{"essays":[' + b",".join(b'{"id":"essay-%d","status":"done"}' % i for i in range(400)) + b"]}}"


@pytest.mark.parametrize(
    ("header", "gzip_chosen"),
    [
        ("gzip", True),
        ("gzip, deflate, br, zstd", True),
        ("GZIP;Q=1.0", True),
        ("x-gzip", True),
        ("*", True),
        ("deflate;q=1, gzip;q=0.2", True),  # deflate is not offered: gzip is the best coding there is
        ("gzip;q=0.5, identity;q=0.4", True),
        ("gzip;q=0.5, identity;q=0.5", True),  # a tie: the smaller body
        ("", False),  # no coding is wanted
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),  # named beats `*`
        ("*;q=0", False),
        ("gzip;q=0.5, identity", False),  # identity's unstated weight is 1: preferred
        ("*;q=0.5, gzip;q=0.3", False),  # identity through `*` outweighs gzip
        ("gzip;q=abc", False),  # not a weight: the item is ignored
        ("gzip;q=2", False),
        ("identity;q=0", False),  # nothing acceptable: the body goes as it is rather than a refusal
    ],
)
def test_negotiation_honours_weights(header: str, gzip_chosen: bool) -> None:
    assert prefers_gzip(header) is gzip_chosen


@pytest.mark.parametrize("tail", [b"", b',"extensions":{"cache":{"status":"hit","ageSeconds":1.5}}}', b"x" * 70_000])
def test_a_head_and_any_tail_make_one_gzip_member(tail: bytes) -> None:
    head = GzipHead.of(BODY[:-1])
    assert gunzipped(head.member(tail)) == BODY[:-1] + tail
    assert gzip.decompress(head.member(tail)) == BODY[:-1] + tail
    assert len(head.member(b"")) < len(BODY) / 5, "the head is compressed, not stored"


def test_the_memo_compresses_a_digest_once_and_only_stored_bodies() -> None:
    memo = HeadMemo(capacity=1 << 20)
    delta = Delta()
    first = memo.head(BODY, "d1", len(BODY) - 1)
    assert memo.head(BODY, "d1", len(BODY) - 1) is first
    assert delta(COMPRESSIONS, what="cached") == 1 and delta(MEMO_HITS) == 1
    assert memo.head(BODY, "d1", len(BODY)) is not first, "another cut of the same bytes is another head"
    assert memo.head(BODY, None, len(BODY)) is not memo.head(BODY, None, len(BODY)), "no digest: never memoized"
    assert delta(COMPRESSIONS, what="cached") == 2 and delta(COMPRESSIONS, what="response") == 2


def test_the_memo_drops_the_least_recently_used_past_its_capacity() -> None:
    size = len(GzipHead.of(BODY).deflated)
    memo = HeadMemo(capacity=2 * size)
    a, b = memo.head(BODY, "a", len(BODY)), memo.head(BODY, "b", len(BODY))
    assert memo.head(BODY, "a", len(BODY)) is a  # a is now the most recently used
    memo.head(BODY, "c", len(BODY))  # over capacity: b goes
    assert memo.head(BODY, "a", len(BODY)) is a
    assert memo.head(BODY, "b", len(BODY)) is not b
    assert HeadMemo(capacity=0).head(BODY, "a", 10) is not HeadMemo(capacity=0).head(BODY, "a", 10)


def test_a_response_is_gzipped_above_the_threshold_and_always_varies() -> None:
    compression = Compression(enabled=True, min_bytes=100, memo_bytes=0)
    large = compression.response(Response(BODY, media_type="application/json"), wanted=True)
    assert large.headers["content-encoding"] == "gzip" and large.headers["vary"] == "Accept-Encoding"
    assert int(large.headers["content-length"]) == len(large.body)
    assert gunzipped(bytes(large.body)) == BODY
    small = compression.response(Response(b"x" * 99), wanted=True)
    assert "content-encoding" not in small.headers and small.headers["vary"] == "Accept-Encoding"
    unwanted = compression.response(Response(BODY), wanted=False)
    assert unwanted.body == BODY and unwanted.headers["vary"] == "Accept-Encoding"
    not_modified = compression.response(Response(status_code=304, headers={"ETag": '"x"'}), wanted=True)
    assert not_modified.body == b"" and not_modified.headers["vary"] == "Accept-Encoding"
    encoded = Response(b"z" * 500, headers={"Content-Encoding": "gzip"})
    assert compression.response(encoded, wanted=True).body == b"z" * 500, "never encoded twice"


def test_off_means_no_encoding_and_no_vary_and_streams_are_left_alone() -> None:
    off = Compression(enabled=False, min_bytes=0, memo_bytes=0).response(Response(BODY), wanted=True)
    assert off.body == BODY and "vary" not in off.headers and "content-encoding" not in off.headers
    assert not Compression(enabled=False, min_bytes=0, memo_bytes=0).wanted("gzip")

    async def parts() -> AsyncIterator[bytes]:
        yield BODY

    stream = StreamingResponse(parts())
    same = Compression(enabled=True, min_bytes=0, memo_bytes=0).response(stream, wanted=True)
    assert same is stream and "content-encoding" not in stream.headers and "vary" not in stream.headers
