"""A TCP proxy in front of Redis that can be cut: the network partition a kill cannot simulate (Redis keeps its data
while a client's commands are lost). It can also hold every reply back for a while: a slow Redis, or a slow network,
as seen from a client whose own loop is idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Callable[[], float] = lambda: 0.0
) -> None:
    try:
        while data := await reader.read(65_536):
            if pause := delay():
                await asyncio.sleep(pause)
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class Proxy:
    """Forwards 127.0.0.1:{port} to the target. `cut()` drops open connections and black-holes new ones (they are
    accepted and never answered, so clients hit their timeouts); `heal()` forwards again. `delay(seconds)` holds each
    chunk of Redis's replies back that long from then on (0: forward at once)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._healed = asyncio.Event()
        self._healed.set()
        self._delay = 0.0

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    def cut(self) -> None:
        self._healed.clear()
        self._drop()

    def heal(self) -> None:
        self._healed.set()

    def delay(self, seconds: float) -> None:
        self._delay = seconds

    async def close(self) -> None:
        self._healed.set()
        self._drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _drop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if not self._healed.is_set():
                await self._healed.wait()
                return
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            self._writers.add(up_writer)
            await asyncio.gather(
                _pipe(reader, up_writer), _pipe(up_reader, writer, lambda: self._delay), return_exceptions=True
            )
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
