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
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast, overload

import orjson
import structlog
from cross_web import HTTPException
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from starlette.websockets import WebSocketDisconnected as SendAfterClose
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from app import graphiql
from app.auth import AuthError, Caller, authenticate
from app.cache import Executed, QueryCache, Served, cache_extension, graphql_cache_key, with_cache_extension
from app.errors import BAD_USER_INPUT, INTERNAL, LIMIT_EXCEEDED, UNAUTHENTICATED, error_body
from app.graphql.subscriptions import LiveContext, Rejection, authenticate_connection
from app.limits import ApiLimits
from app.live import EventHub
from app.metrics import GRAPHQL_ERRORS, record_request
from app.reads.consistency import Consistency
from app.reads.context import CORRELATION_HEADER, RequestContext, correlation_id, new_context
from infra import cache_keys as ck
from infra.breaker import CircuitBreaker
from infra.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

_HTTP_CODES = {400: BAD_USER_INPUT, 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


class _Headers(Mapping[str, str]):
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


class _WebSocketAdapter(ASGIWebSocketAdapter):
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


class _TransportWSHandler(BaseGraphQLTransportWSHandler[RequestContext, None]):
    async def handle_task_exception(self, error: Exception) -> None:
        # An operation whose client left while its result was being sent: nothing went wrong on this side, and
        # Strawberry would log the whole chain of disconnect exceptions as an error.
        if client_went_away(error):
            log.debug("websocket client disconnected during an operation", error=type(error).__name__)
            return
        await super().handle_task_exception(error)


class GraphQLEndpoint(GraphQL[RequestContext, None]):
    websocket_adapter_class = _WebSocketAdapter
    graphql_transport_ws_handler_class = _TransportWSHandler

    def __init__(
        self,
        schema: Any,
        settings: Settings,
        limits: ApiLimits,
        engine: Callable[[], AsyncEngine],
        cache: QueryCache | None = None,
        events: EventHub | None = None,
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
        self.consistency = Consistency(events, engine, settings.consistency_max_wait_ms)
        # Hits skip validation, so entries of another schema or other limits must never match.
        self._cache_version = ck.digest(["graphql", str(schema), repr(limits)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if self._events is None:  # live updates are off: refuse the handshake (HTTP 403)
                await WebSocket(scope, receive, send).close(code=1008)
                return
            await super().__call__(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        body = _Body(_capped(receive, self.limits.max_request_bytes))
        request = Request(scope, body.receive)
        headers = _Headers(scope)
        correlation = correlation_id(headers)
        try:
            try:
                response = await self._respond(request, body, headers, correlation)
            except _BodyTooLarge:
                response = _too_large(self.limits.max_request_bytes, correlation)
            if isinstance(response, bytes):
                await _send_json(send, response, correlation)
                return
            response.headers[CORRELATION_HEADER] = correlation
            await response(scope, receive, send)
        except ClientDisconnect:  # the client left mid-request: nothing to answer, nothing went wrong here
            log.debug("client disconnected", path=scope["path"], method=scope["method"], correlation_id=correlation)

    async def _respond(self, request: Request, body: _Body, headers: _Headers, correlation: str) -> Response | bytes:
        """The response, or the body of a 200 JSON answer that holds a cacheable result (sent without a Response)."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_request_bytes:
            return _too_large(self.limits.max_request_bytes, correlation)
        if request.method == "GET" and self.should_render_graphql_ide(self.request_adapter_class(request)):
            if not self.limits.graphiql:
                return _http_error("GraphiQL is disabled on this server (RAS_GRAPHIQL_ENABLED).", 404, correlation)
            return await self.render_graphql_ide(request)
        caller = authenticate(headers, self.settings)
        if isinstance(caller, AuthError):
            return JSONResponse(error_body(caller.hint, UNAUTHENTICATED, correlation), status_code=401)
        keyed = await self._keyed(request, body, headers, caller.user_id)
        started = time.perf_counter()
        if keyed.key is None or self._cache is None:
            response: Response | bytes = await self._execute(request, caller, correlation)
        else:
            response = await self._cached(self._cache, keyed.key, request, caller, correlation)
        status_code = 200 if isinstance(response, bytes) else response.status_code
        record_request("graphql", keyed.operation, status_code, time.perf_counter() - started)
        return response

    async def _keyed(self, request: Request, body: _Body, headers: _Headers, user_id: str | None) -> _Keyed:
        if request.method == "POST" and headers.get("content-type", "").split(";")[0].strip() == "application/json":
            posted = await body.read()
            if self._cache is not None and len(posted) <= _KEYED_MAX_BYTES:
                return _keyed_post(posted, user_id, self._cache_version)
            return _keyed(_posted(posted), user_id, self._cache_version if self._cache is not None else None)
        operation = _got(request) if request.method == "GET" else None
        return _keyed(operation, user_id, self._cache_version if self._cache is not None else None)

    async def _execute(self, request: Request, caller: Caller, correlation: str) -> Response:
        request.state.correlation_id = correlation  # for `process_result`
        context = new_context(self._engine(), caller, correlation, self.limits, self.breaker, self.consistency)
        try:
            response = await self.run(request, context=context)
        except HTTPException as exc:
            return _http_error(exc.reason, exc.status_code, correlation)
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
            return _spliced(served.body, served)
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
        service_ids = self.settings.allowed_service_ids
        return graphiql.page_response(str(request.url.path), service_ids[0] if service_ids else "")

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


@dataclass(frozen=True, slots=True)
class _Operation:
    query: str
    name: str | None
    variables: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Keyed:
    """A request's cache key (None: not cacheable, or no cache) and its operation name as the metrics label it."""

    key: str | None
    operation: str


# Gateways send the same few bodies over and over; parsing one and computing its key was a third of a cache hit's
# own time (bench R1). Bounded like `app.cache._normalized`: at most 256 bodies of at most 20,000 bytes.
_KEYED_MAX_BYTES = 20_000


@functools.lru_cache(maxsize=256)
def _keyed_post(body: bytes, user_id: str | None, version: str) -> _Keyed:
    return _keyed(_posted(body), user_id, version)


def _keyed(operation: _Operation | None, user_id: str | None, version: str | None) -> _Keyed:
    name = (operation.name if operation else None) or "anonymous"
    if operation is None or version is None:
        return _Keyed(None, name)
    return _Keyed(graphql_cache_key(operation.query, operation.name, operation.variables, user_id, version), name)


def _posted(body: bytes) -> _Operation | None:
    """The single operation a POSTed JSON body carries, read the way Strawberry will read it; None when that is not
    plain (batched requests, malformed input): such requests skip the cache and get Strawberry's own errors."""
    try:
        return _single(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def _got(request: Request) -> _Operation | None:
    """The single operation of a GET's query parameters, as `_posted`."""
    params = request.query_params
    raw_variables = params.get("variables")
    try:
        variables = orjson.loads(raw_variables) if raw_variables else None
    except orjson.JSONDecodeError:
        return None
    return _single({"query": params.get("query"), "operationName": params.get("operationName"), "variables": variables})


def _single(data: object) -> _Operation | None:
    if not isinstance(data, dict):
        return None
    query, name, variables = data.get("query"), data.get("operationName"), data.get("variables")
    if not isinstance(query, str) or not isinstance(name, str | None) or not isinstance(variables, dict | None):
        return None
    return _Operation(query, name, variables)


def _spliced(data_only: bytes, served: Served) -> bytes:
    """A cacheable body (exactly `{"data":…}`, as `_cached` builds it) with `extensions.cache` appended to its bytes:
    hits are answered without parsing or re-encoding the stored document, and it is copied once."""
    extension = orjson.dumps(cache_extension(served))
    return b"".join((memoryview(data_only)[:-1], b',"extensions":{"cache":', extension, b"}}"))


async def _send_json(send: Send, body: bytes, correlation: str) -> None:
    """A 200 JSON answer with the headers Starlette's `Response` would send, without building one (cache hits)."""
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        (b"x-correlation-id", correlation.encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _http_error(message: str, status_code: int, correlation: str) -> Response:
    if status_code >= 500:
        return PlainTextResponse("Internal Server Error", status_code=500)
    code = _HTTP_CODES.get(status_code, BAD_USER_INPUT)
    return JSONResponse(error_body(message, code, correlation), status_code=status_code)


class _Body:
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


class _BodyTooLarge(Exception):
    pass


def _capped(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a body growing past `limit` bytes, whatever Content-Length claimed (or if absent)."""
    received = 0

    async def capped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
        return message

    return capped


def _too_large(limit: int, correlation: str) -> Response:
    message = f"Request body exceeds the limit of {limit} bytes."
    return JSONResponse(error_body(message, LIMIT_EXCEEDED, correlation, limit=limit), status_code=413)
