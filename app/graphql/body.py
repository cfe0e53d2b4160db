"""A request's body: capped at the size limit whatever Content-Length claimed, and read at most once, by the cache
key first when it needs it, then handed whole to Strawberry (on a miss)."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive


class RequestBody:
    """A request's `receive` whose body the cache key can read first: it is then handed, whole, to the next reader
    (Strawberry, on a miss). Starlette's `Request.body()` streams it through an async generator: 3 % of a hit."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._read: bytes | None = None

    async def read(self) -> bytes:
        chunks = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self._read = b"".join(chunks)
        return self._read

    async def receive(self) -> Message:
        if self._read is None:
            return await self._receive()
        message: Message = {"type": "http.request", "body": self._read, "more_body": False}
        self._read = None
        return message


class BodyTooLarge(Exception):
    pass


def capped(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a body growing past `limit` bytes, whatever Content-Length claimed (or if absent)."""
    received = 0

    async def capped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge
        return message

    return capped
