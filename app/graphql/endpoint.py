"""The `/graphql` endpoint: Strawberry's ASGI view with this service's authentication, context and error bodies.

Request flow: the GraphiQL page (a browser's GET without a query) needs no credentials, since it holds no data;
every other request is authenticated first and refused with 401 and a GraphQL-shaped body. An authenticated
request gets a fresh `RequestContext`, Strawberry parses and runs it, and the context's database snapshot is closed
when the response is built. Every response carries `X-Correlation-ID`.

Each request's operation is read by app/graphql/operation.py (through keys.py, which memoizes it with the cache
key): a malformed request, or a query text above the length or token limit, is refused there, before any GraphQL
parsing; Strawberry is handed that operation rather than reading the body again. Responses are
`application/json` or, when the Accept header asks for it, `application/graphql-response+json` with the status
codes GraphQL over HTTP sets for it (media.py). A request naming a persisted document by id gets its text on the
miss path (persisted.py), and an APQ registration is kept once its operation executed.

With a result cache, a single operation (POST JSON or GET) is looked up by its key before Strawberry sees it: a
hit is answered with the stored bytes and `extensions.cache` spliced in, without parsing, validating or executing
anything (both media types share the stored bytes: only the Content-Type header differs). A miss runs the normal
path inside `QueryCache.fetch`, with a context created there, so its database snapshot opens after the cache's own
snapshot (app/cache.py explains why that ordering matters). Only error-free results whose reads are all covered by
tags are stored.

Responses are gzipped where the request's Accept-Encoding prefers it (app/compression.py): a cacheable result from
its stored bytes' compressed head, memoized per process, so a hit compresses nothing; any other response as it goes.

WebSocket connections (graphql-transport-ws only) carry subscriptions (app/graphql/subscriptions.py): the
credentials come in the `connection_init` payload or on the upgrade request, and a refused connection is closed
with 4401 (missing) or 4403 (wrong); without a live-update hub the handshake itself is refused.

This module is the composition; its parts are modules of their own: the raw ASGI of the hit path (asgi.py), the
request body's cap and memo (body.py), the cache key (keys.py), the splice of `extensions.cache` into stored bytes
(splice.py), the refusals before execution (refusals.py), the operation's reading (operation.py), the response media
type (media.py), persisted documents (persisted.py) and the WebSocket adapter (websocket.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import orjson
import structlog
from cross_web import HTTPException, StarletteRequestAdapter
from opentelemetry.trace import Tracer
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.http.base import BaseRequestProtocol
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from app import graphiql
from app.admission import AdmissionGate
from app.auth import AuthError, Caller, authenticate
from app.cache import Executed, QueryCache, Served, with_cache_extension
from app.compression import ACCEPT_ENCODING, Compression
from app.errors import INTERNAL, trace_extension
from app.graphql.asgi import ScopeHeaders, send_json
from app.graphql.body import BodyTooLarge, RequestBody, capped
from app.graphql.keys import RequestKeys
from app.graphql.media import GRAPHQL_RESPONSE, MediaType, negotiated, request_error_status
from app.graphql.operation import Operation, Refusal
from app.graphql.persisted import PersistedDocuments
from app.graphql.refusals import http_error, refused, too_large, unauthenticated
from app.graphql.splice import extension_tail, spliced
from app.graphql.subscriptions import LiveContext, Rejection, authenticate_connection
from app.graphql.websocket import TransportWSHandler, WebSocketAdapter
from app.limits import ApiLimits
from app.live import EventHub
from app.metrics import GRAPHQL_ERRORS, record_request
from app.reads.consistency import Consistency
from app.reads.context import CORRELATION_HEADER, RequestContext, correlation_id, new_context
from app.replicas import Replicas
from infra import cache_keys as ck
from infra.breaker import CircuitBreaker
from infra.settings import Settings

log = structlog.get_logger(__name__)


class _RequestAdapter(StarletteRequestAdapter):
    """Strawberry's view of a request, keeping the request itself: `parse_http_body` takes the operation from it."""

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self.request = request


class GraphQLEndpoint(GraphQL[RequestContext, None]):
    request_adapter_class = _RequestAdapter
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
        compression: Compression | None = None,
        tracer: Tracer | None = None,
        gate: AdmissionGate | None = None,
        replicas: Replicas | None = None,
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
        self._tracer = tracer  # the loaders' spans; the request's and the operation's are made around this endpoint
        self.breaker = CircuitBreaker(threshold=3, reset_after=2.0)
        self.consistency = consistency  # read-your-writes waits; None: an awaited position is never reached
        self._compression = compression or Compression.from_settings(settings)
        self.gate = gate  # the process's execution limit (app/admission.py); None: no limit
        self.replicas = replicas  # read replicas (app/replicas.py); None: requests read the primary
        # Redis is the documents' fast layer where the cache has it; PostgreSQL holds them all.
        redis = ck.connect(settings) if cache is not None else None
        self.documents = PersistedDocuments(settings.documents, engine, redis, ck.CacheLayout(settings.cache_prefix))
        # Hits skip validation, so entries of another schema, other limits or another documents mode (what a
        # document id may run) must never match (None: no cache).
        version = ck.digest(["graphql", str(schema), repr(limits), settings.documents]) if cache is not None else None
        self._keys = RequestKeys(version, limits, self.documents)

    async def aclose(self) -> None:
        await self.documents.aclose()

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
        media = negotiated(headers.get("accept", ""))
        gzip = self._compression.wanted(headers.get(ACCEPT_ENCODING))
        try:
            try:
                response = await self._respond(request, body, headers, correlation, media)
            except BodyTooLarge:
                response = too_large(self.limits.max_request_bytes, correlation, media)
            if isinstance(response, Served):
                await self._send_served(send, response, correlation, media, gzip)
                return
            response.headers[CORRELATION_HEADER] = correlation
            await self._compression.response(response, gzip)(scope, receive, send)
        except ClientDisconnect:  # the client left mid-request: nothing to answer, nothing went wrong here
            log.debug("client disconnected", path=scope["path"], method=scope["method"], correlation_id=correlation)

    async def _respond(
        self, request: Request, body: RequestBody, headers: ScopeHeaders, correlation: str, media: MediaType
    ) -> Response | Served:
        """The response, or the cache's answer for a cacheable result (sent without a Response: `_send_served`)."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_request_bytes:
            return too_large(self.limits.max_request_bytes, correlation, media)
        if request.method == "GET" and self.should_render_graphql_ide(self.request_adapter_class(request)):
            if not self.limits.graphiql:
                return http_error("GraphiQL is disabled on this server (RAS_GRAPHIQL_ENABLED).", 404, correlation)
            return await self.render_graphql_ide(request)
        caller = authenticate(request.scope["headers"], self.settings)
        if isinstance(caller, AuthError):
            return unauthenticated(caller, correlation, media)
        if request.method not in ("GET", "POST"):
            return http_error("GraphQL only supports GET and POST requests.", 405, correlation, media)
        prepared = await self._keys.prepare(request, body, headers, caller.user_id)
        started = time.perf_counter()
        if prepared.refusal is not None or prepared.operation is None:
            assert prepared.refusal is not None, "an operation that could not be read is refused"
            response: Response | Served = refused(prepared.refusal, correlation, media)
        elif prepared.key is None or self._cache is None:
            response = await self._execute(request, caller, correlation, prepared.operation, media)
        else:
            response = await self._cached(
                self._cache, prepared.key, request, caller, correlation, prepared.operation, media
            )
        status_code = 200 if isinstance(response, Served) else response.status_code
        record_request("graphql", prepared.label, status_code, time.perf_counter() - started)
        return response

    async def _send_served(self, send: Send, served: Served, correlation: str, media: MediaType, gzip: bool) -> None:
        """A cacheable result's 200: the stored bytes with `extensions.cache` spliced on, gzipped from their memoized
        compressed head when the request prefers gzip (app/compression.py)."""
        tail = extension_tail(served)
        kept = len(served.body) - 1  # all but the closing brace, which the tail replaces
        if self._compression.compresses(kept + len(tail), gzip):
            encoded = self._compression.cached(served.body, served.digest, kept, tail)
            await send_json(send, encoded, correlation, media, self._compression.headers(encoded=True))
        else:
            plain = spliced(served.body, tail)
            await send_json(send, plain, correlation, media, self._compression.headers(encoded=False))

    async def _execute(
        self, request: Request, caller: Caller, correlation: str, operation: Operation, media: MediaType
    ) -> Response:
        resolved = await self.documents.resolved(operation)
        if isinstance(resolved, Refusal):
            return refused(resolved, correlation, media)
        state = request.state
        state.correlation_id = correlation  # for `process_result`
        state.operation = resolved  # for `parse_http_body`
        state.media = media
        context = new_context(
            self._engine(),
            caller,
            correlation,
            self.limits,
            self.breaker,
            self.consistency,
            self._tracer,
            self.gate,
            self.replicas,
        )
        try:
            response = await self.run(request, context=context)
        except HTTPException as exc:
            return http_error(exc.reason, exc.status_code, correlation, media)
        finally:
            await context.close()
        state.tags = context.tags
        state.replayed = context.session.replayed
        if getattr(state, "executed", False):  # its document parsed and validated: an APQ registration is kept
            await self.documents.register(operation)
        if media == GRAPHQL_RESPONSE:
            response.headers["content-type"] = GRAPHQL_RESPONSE
            response.status_code = getattr(state, "request_error_status", response.status_code)
        if context.session.unavailable and response.status_code == 200:
            response.status_code = 503
            response.headers["Retry-After"] = "2"
        return response

    async def _cached(
        self,
        cache: QueryCache,
        key: str,
        request: Request,
        caller: Caller,
        correlation: str,
        operation: Operation,
        media: MediaType,
    ) -> Response | Served:
        own: Response | None = None

        async def execute() -> Executed:
            nonlocal own
            own = await self._execute(request, caller, correlation, operation, media)
            tags = getattr(request.state, "tags", None)
            if own.status_code != 200 or tags is None:
                # Refused before Strawberry ran (a persisted document not found) or by it at the HTTP level (an
                # unknown operationName): nothing executed, so `_execute` recorded no tags; errors are never stored.
                return Executed(b"", cacheable=False)
            document = orjson.loads(own.body)
            if not tags.cacheable or not isinstance(document, dict) or document.get("errors") or "data" not in document:
                return Executed(b"", cacheable=False)
            body = orjson.dumps({"data": document["data"]})
            return Executed(
                body, ck.read_tags(tags.batches, tags.user_lists), replayed=getattr(request.state, "replayed", None)
            )

        served = await cache.fetch(key, execute)
        if served.body:
            return served
        assert own is not None, "only an execution here yields a body that may not be stored"
        if own.status_code != 200:
            return own
        return Response(with_cache_extension(bytes(own.body), served), media_type=media)

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

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        """A browser's GET without a query, unless it names a persisted document (an APQ GET sends no query)."""
        params = request.query_params
        return super().should_render_graphql_ide(request) and "extensions" not in params and "documentId" not in params

    async def parse_http_body(self, request_adapter: Any) -> GraphQLRequestData:
        """The operation `_execute` was given (read and checked by app/graphql/operation.py), not the body again."""
        assert isinstance(request_adapter, _RequestAdapter)
        operation: Operation = request_adapter.request.state.operation
        return GraphQLRequestData(operation.query, operation.variables, operation.name, operation.extensions)

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
                extensions.update(code=INTERNAL, correlationId=correlation, **trace_extension())
            GRAPHQL_ERRORS.labels(str(extensions["code"])).inc()
        # Nothing executed when no error is a field's: under application/graphql-response+json that is GraphQL over
        # HTTP's request error, a 4xx or 5xx without `data`.
        executed = result.data is not None or any(error.path for error in result.errors or ())
        request.state.executed = executed
        if request.state.media == GRAPHQL_RESPONSE and not executed and result.errors:
            first = cast(list[dict[str, Any]], response["errors"])[0]
            request.state.request_error_status = request_error_status(str(first["extensions"]["code"]))
            del response["data"]
        return response

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        # The standard library's json recurses once per nesting level, so a 64 KB body of brackets raised
        # RecursionError (a 500). orjson stops at 1,024 levels with a JSONDecodeError: the usual 400.
        return orjson.loads(data)
