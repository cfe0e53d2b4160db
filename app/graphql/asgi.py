"""Raw ASGI for the cache-hit path, where Starlette's conveniences were a measurable share of a hit's time (bench
R1): a request's headers read once from the scope, and a 200 JSON answer sent without building a `Response`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar, overload

from starlette.types import Scope, Send

T = TypeVar("T")


class ScopeHeaders(Mapping[str, str]):
    """A request's headers by name, any case, the first of repeated ones (as Starlette's `Headers`), read once from
    the scope into a dict: `Headers` scans the whole list for each of the five a cache hit looks at."""

    __slots__ = ("_values",)

    def __init__(self, scope: Scope) -> None:
        # Names are lower case in ASGI; reversed, so that the first of repeated headers is the one kept.
        self._values: dict[str, str] = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])
        }

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, default: str, /) -> str: ...
    @overload
    def get(self, name: str, default: T, /) -> str | T: ...
    def get(self, name: str, default: object = None, /) -> object:
        return self._values.get(name.lower(), default)


async def send_json(
    send: Send, body: bytes, correlation: str, media: str, more: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """A 200 answer of JSON under the response media type `media` (app/graphql/media.py), with the headers
    Starlette's `Response` would send and `more` (those of its compression), without building one (cache hits)."""
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", media.encode()),
        (b"x-correlation-id", correlation.encode()),
        *more,
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
