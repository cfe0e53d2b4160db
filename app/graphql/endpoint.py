"""The `/graphql` endpoint: Strawberry's ASGI view with this service's authentication, context and error bodies.

Request flow: the GraphiQL page (a browser's GET without a query) needs no credentials, since it holds no data;
every other request is authenticated first and refused with 401 and a GraphQL-shaped body. An authenticated
request gets a fresh `RequestContext`, Strawberry parses and runs it, and the context's database snapshot is closed
when the response is built. Every response carries `X-Correlation-ID`.

With a result cache, a single operation (POST JSON or GET) is looked up by its key before Strawberry sees it: a
hit is answered with the stored bytes and `extensions.cache` spliced in, without parsing, validating or executing
anything. A miss runs the normal path inside `QueryCache.fetch`, with a context created there, so its database
snapshot opens after the cache's own snapshot (app/cache.py explains why that ordering matters). Only error-free
results whose reads are all covered by tags are stored.

WebSocket connections (graphql-transport-ws only) carry subscriptions (app/graphql/subscriptions.py): the
credentials come in the `connection_init` payload or on the upgrade request, and a refused connection is closed
with 4401 (missing) or 4403 (wrong); without a live-update hub the handshake itself is refused.

This module is the composition; its parts are modules of their own: the raw ASGI of the hit path (asgi.py), the
request body's cap and memo (body.py), the cache key (keys.py), the splice of `extensions.cache` into stored bytes
(splice.py), the refusals before execution (refusals.py) and the WebSocket adapter (websocket.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import orjson
import structlog
from cross_web import HTTPException
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from app import graphiql
from app.auth import AuthError, Caller, authenticate
from app.cache import Executed, QueryCache, with_cache_extension
from app.errors import INTERNAL
from app.graphql.asgi import ScopeHeaders, send_json
from app.graphql.body import BodyTooLarge, RequestBody, capped
from app.graphql.keys import request_key
from app.graphql.refusals import http_error, too_large, unauthenticated
from app.graphql.splice import spliced
from app.graphql.subscriptions import LiveContext, Rejection, authenticate_connection
from app.graphql.websocket import TransportWSHandler, WebSocketAdapter
from app.limits import ApiLimits
from app.live import EventHub
from app.metrics import GRAPHQL_ERRORS, record_request
from app.reads.consistency import Consistency
from app.reads.context import CORRELATION_HEADER, RequestContext, correlation_id, new_context
from infra import cache_keys as ck
from infra.breaker import CircuitBreaker
from infra.settings import Settings

log = structlog.get_logger(__name__)


class GraphQLEndpoint(GraphQL[RequestContext, None]):
    websocket_adapter_class = WebSocketAdapter
    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(
        self,
        schema: Any,
        settings: Settings,
        limits: ApiLimits,
        engine: Callable[[], AsyncEngine],
        cache: QueryCache | None = None,
        events: EventHub | None = None,
        consistency: Consistency | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if limits.graphiql else None,
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=10),
        )
        self.settings = settings
        self.limits = limits
        self._engine = engine
        self._cache = cache
        self._events = events
        self.breaker = CircuitBreaker(threshold=3, reset_after=2.0)
        self.consistency = consistency  # read-your-writes waits; None: an awaited position is never reached
        # Hits skip validation, so entries of another schema or other limits must never match (None: no cache).
        self._cache_version = ck.digest(["graphql", str(schema), repr(limits)]) if cache is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if self._events is None:  # live updates are off: refuse the handshake (HTTP 403)
                await WebSocket(scope, receive, send).close(code=1008)
                return
            await super().__call__(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        body = RequestBody(capped(receive, self.limits.max_request_bytes))
        request = Request(scope, body.receive)
        headers = ScopeHeaders(scope)
        correlation = correlation_id(headers)
        try:
            try:
                response = await self._respond(request, body, headers, correlation)
            except BodyTooLarge:
                response = too_large(self.limits.max_request_bytes, correlation)
            if isinstance(response, bytes):
                await send_json(send, response, correlation)
                return
            response.headers[CORRELATION_HEADER] = correlation
            await response(scope, receive, send)
        except ClientDisconnect:  # the client left mid-request: nothing to answer, nothing went wrong here
            log.debug("client disconnected", path=scope["path"], method=scope["method"], correlation_id=correlation)

    async def _respond(
        self, request: Request, body: RequestBody, headers: ScopeHeaders, correlation: str
    ) -> Response | bytes:
        """The response, or the body of a 200 JSON answer that holds a cacheable result (sent without a Response)."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_request_bytes:
            return too_large(self.limits.max_request_bytes, correlation)
        if request.method == "GET" and self.should_render_graphql_ide(self.request_adapter_class(request)):
            if not self.limits.graphiql:
                return http_error("GraphiQL is disabled on this server (RAS_GRAPHIQL_ENABLED).", 404, correlation)
            return await self.render_graphql_ide(request)
        caller = authenticate(request.scope["headers"], self.settings)
        if isinstance(caller, AuthError):
            return unauthenticated(caller, correlation)
        keyed = await request_key(request, body, headers, caller.user_id, self._cache_version)
        started = time.perf_counter()
        if keyed.key is None or self._cache is None:
            response: Response | bytes = await self._execute(request, caller, correlation)
        else:
            response = await self._cached(self._cache, keyed.key, request, caller, correlation)
        status_code = 200 if isinstance(response, bytes) else response.status_code
        record_request("graphql", keyed.operation, status_code, time.perf_counter() - started)
        return response

    async def _execute(self, request: Request, caller: Caller, correlation: str) -> Response:
        request.state.correlation_id = correlation  # for `process_result`
        context = new_context(self._engine(), caller, correlation, self.limits, self.breaker, self.consistency)
        try:
            response = await self.run(request, context=context)
        except HTTPException as exc:
            return http_error(exc.reason, exc.status_code, correlation)
        finally:
            await context.close()
        request.state.tags = context.tags
        if context.session.unavailable and response.status_code == 200:
            response.status_code = 503
            response.headers["Retry-After"] = "2"
        return response

    async def _cached(
        self, cache: QueryCache, key: str, request: Request, caller: Caller, correlation: str
    ) -> Response | bytes:
        own: Response | None = None

        async def execute() -> Executed:
            nonlocal own
            own = await self._execute(request, caller, correlation)
            if own.status_code != 200:
                # Refused by Strawberry at the HTTP level (a PUT, an unknown operationName): nothing executed, so
                # `_execute` recorded no tags, and an error is never stored anyway.
                return Executed(b"", cacheable=False)
            tags = request.state.tags
            document = orjson.loads(own.body)
            if not tags.cacheable or not isinstance(document, dict) or document.get("errors") or "data" not in document:
                return Executed(b"", cacheable=False)
            body = orjson.dumps({"data": document["data"]})
            return Executed(body, ck.read_tags(tags.batches, tags.user_lists))

        served = await cache.fetch(key, execute)
        if served.body:
            return spliced(served.body, served)
        assert own is not None, "only an execution here yields a body that may not be stored"
        if own.status_code != 200:
            return own
        return Response(with_cache_extension(bytes(own.body), served), media_type="application/json")

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> RequestContext:
        """The context of a WebSocket connection (HTTP requests get theirs in `_execute`): not authenticated until
        `on_ws_connect` has seen connection_init."""
        assert isinstance(request, WebSocket) and self._events is not None
        unknown = Caller("", None)
        return LiveContext.open(
            self._engine(),
            unknown,
            correlation_id(request.headers),
            self.limits,
            self.breaker,
            self.consistency,
            hub=self._events,
            settings=self.settings,
            websocket=request,
        )

    async def on_ws_connect(self, context: RequestContext) -> UnsetType | dict[str, object] | None:
        assert isinstance(context, LiveContext) and context.websocket is not None
        caller = authenticate_connection(context.websocket.headers, context.connection_params, self.settings)
        if isinstance(caller, Rejection):
            await context.websocket.close(code=caller.code, reason=caller.reason)
            raise ConnectionRejectionError
        context.caller = caller
        context.authenticated = True
        return cast(UnsetType, UNSET)  # acknowledge without a payload

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.page_response(request, self.settings)

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        response = process_result(result)
        # ErrorShaping has coded every error of an operation; an error without a code escaped it (say, from
        # an extension) and is masked like any internal error.
        for error in cast(list[dict[str, Any]], response.get("errors") or []):
            extensions = error.setdefault("extensions", {})
            if "code" not in extensions:
                correlation = request.state.correlation_id
                log.error("graphql.unshaped_error", correlation_id=correlation, error=error.get("message"))
                error["message"] = f"Internal error. It was logged with correlation id {correlation}."
                extensions.update(code=INTERNAL, correlationId=correlation)
            GRAPHQL_ERRORS.labels(str(extensions["code"])).inc()
        return response

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        # The standard library's json recurses once per nesting level, so a 64 KB body of brackets raised
        # RecursionError (a 500). orjson stops at 1,024 levels with a JSONDecodeError: the usual 400.
        return orjson.loads(data)
