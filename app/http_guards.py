"""Connection-level guards of the HTTP server: how long a request may take to arrive, how many connections one
address may hold.

uvicorn closes a keep-alive connection that stays idle between requests (`timeout_keep_alive`, 5 s), but once a
request's first byte has arrived it waits for the rest for ever, and it accepts any number of connections from one
address: 500 connections sending a header line now and then, and 200 sending a body a byte at a time, all stayed
open. `guarded_protocol` is uvicorn's httptools protocol with three guards added:

* **head deadline**: a request's line and headers must be in within `http_header_timeout_seconds` of the
  connection opening (its first request) or of the request's first byte (later ones); otherwise the connection is
  closed without an answer, as nothing of the request can be answered yet;
* **body deadline**: its body must be in within `http_body_timeout_seconds` of its head; otherwise it is answered
  408 with the error JSON every refusal carries (`LIMIT_EXCEEDED`, `extensions.limit` the seconds) and the
  connection is closed. The application's read of the body ends as if the client had left. A client still sending
  a body after its answer (an early 401, say) is cut off the same way;
* **per-address cap**: at most `http_max_connections_per_ip` connections from one peer address at once; a further
  one is closed as soon as it is accepted (0: no cap). Behind a proxy every connection comes from the proxy's
  address, so the cap must exceed the connections the proxy opens to one instance. A WebSocket connection counts
  until its upgrade; from then on the live-update limits apply (docs/live.md).

Each closed connection is counted in `ras_http_connections_closed_total{reason}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from prometheus_client import Counter
from starlette.datastructures import Headers
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.errors import LIMIT_EXCEEDED, error_body
from infra.settings import Settings

CLOSED = Counter(
    "ras_http_connections_closed_total",
    "Connections the server closed on a slow or greedy client: head_timeout (request line and headers too slow), "
    "body_timeout (body too slow; answered 408 when nothing was answered yet), per_ip_cap (one address held too many).",
    ["reason"],
)

Correlation = Callable[[Mapping[str, str]], str]


@dataclass(frozen=True)
class _Guards:
    """One server's guards, and its open connections by peer address (for the cap)."""

    head_timeout: float
    body_timeout: float
    max_per_peer: int
    correlation: Correlation
    peers: dict[str, set[asyncio.BaseTransport]] = field(default_factory=dict)


class _GuardedHttp(HttpToolsProtocol):
    """One connection; `guarded_protocol` makes a subclass per server, with that server's guards."""

    guards: ClassVar[_Guards]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._peer: str | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and self.guards.max_per_peer else None
        if self._peer is not None:
            held = self.guards.peers.setdefault(self._peer, set())
            held.difference_update([t for t in held if t.is_closing()])
            if len(held) >= self.guards.max_per_peer:
                self._refused = True
                CLOSED.labels("per_ip_cap").inc()
                transport.close()
                return
            held.add(transport)
        super().connection_made(transport)
        self._start(self.guards.head_timeout, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        if self._refused:
            return
        self._release()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # a later request on a kept-alive connection (the first one's runs since opening)
            self._start(self.guards.head_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._start(self.guards.body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport over (and gets its connection_lost): no longer counted here.
        self._stop()
        self._release()
        super().handle_websocket_upgrade()

    def _start(self, seconds: float, callback: Callable[[], None]) -> None:
        self._stop()
        self._timer = self.loop.call_later(seconds, callback)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self) -> None:
        if self._peer is None:
            return
        held = self.guards.peers.get(self._peer)
        if held is not None:
            held.discard(self.transport)
            if not held:
                del self.guards.peers[self._peer]
        self._peer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            CLOSED.labels("head_timeout").inc()
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        CLOSED.labels("body_timeout").inc()
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and not self.pipeline:
            self.transport.write(self._request_timeout())
            # As connection_lost would: the application's read of the body ends and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _request_timeout(self) -> bytes:
        seconds = self.guards.body_timeout
        message = f"The request body did not arrive within {seconds:g} seconds."
        correlation = self.guards.correlation(Headers(raw=self.headers))
        body = orjson.dumps(error_body(message, LIMIT_EXCEEDED, correlation, limit=seconds))
        head = [STATUS_LINE[408]]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]:
            head += [name, b": ", value, b"\r\n"]
        return b"".join([*head, b"\r\n", body])


def guarded_protocol(settings: Settings, correlation: Correlation) -> type[asyncio.Protocol]:
    """The HTTP protocol class for one uvicorn server (`uvicorn.Config(http=...)`), with the guards `settings` set;
    `correlation` gives a request's correlation id from its headers (for the 408's error JSON)."""

    class Guarded(_GuardedHttp):
        guards = _Guards(
            settings.http_header_timeout_seconds,
            settings.http_body_timeout_seconds,
            settings.http_max_connections_per_ip,
            correlation,
        )

    return Guarded
