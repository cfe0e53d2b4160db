"""Strawberry's WebSocket plumbing adapted to this endpoint: text frames, a second close that is a no-op, and a
client that left mid-operation logged once at debug instead of as an error with its chain of exceptions."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import structlog
from starlette.requests import ClientDisconnect
from starlette.websockets import WebSocketDisconnect, WebSocketState
from starlette.websockets import WebSocketDisconnected as SendAfterClose
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler

from app.reads.context import RequestContext

log = structlog.get_logger(__name__)


class WebSocketAdapter(ASGIWebSocketAdapter):
    async def send_json(self, message: Mapping[str, object]) -> None:
        # graphql-transport-ws messages are text frames (browsers' clients parse `event.data` as a string);
        # Strawberry would send this endpoint's orjson bytes as binary frames.
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except (WebSocketDisconnect, SendAfterClose) as exc:
            # SendAfterClose: an operation finished after its connection had ended (the client left meanwhile).
            raise WebSocketDisconnected from exc

    async def close(self, code: int, reason: str) -> None:
        # A refused connection_init is closed by on_ws_connect with its own code and reason before Strawberry
        # closes it again with a generic one; the second close must be a no-op, not an error.
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            await self.ws.close(code=code, reason=reason)


def client_went_away(error: BaseException) -> bool:
    """Whether `error` (or one it was raised from) is the peer having closed the connection: a WebSocket send after
    the client left (the server's ClientDisconnected → Starlette's WebSocketDisconnect, or Starlette's
    WebSocketDisconnected once the connection has ended → Strawberry's WebSocketDisconnected), or an HTTP body the
    client stopped sending."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, WebSocketDisconnected | WebSocketDisconnect | SendAfterClose | ClientDisconnect):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class TransportWSHandler(BaseGraphQLTransportWSHandler[RequestContext, None]):
    async def handle_task_exception(self, error: Exception) -> None:
        # An operation whose client left while its result was being sent: nothing went wrong on this side, and
        # Strawberry would log the whole chain of disconnect exceptions as an error.
        if client_went_away(error):
            log.debug("websocket client disconnected during an operation", error=type(error).__name__)
            return
        await super().handle_task_exception(error)
