"""The REST compatibility shim: the original service's routes under /internal/v1, for callers that parse its JSON.

A thin translation over the GraphQL API's read path. A request is authenticated like a GraphQL one
(app/auth.py), its parameters are validated (app/rest/params.py), a fresh request context reads the whole answer in
one statement through its loaders (app/reads/loaders.py), the rows become the documented JSON (app/rest/shape.py), and
the bytes go through the same whole-result cache, tagged by what the loaders read, so the consumer's per-batch
evictions cover these responses too. Every 200 carries a strong ETag of its representation (identity or gzip, as
Accept-Encoding prefers: app/compression.py); If-None-Match gets 304.

Error bodies keep the original's `{"error": ...}` message, which callers match on, and add `error_code`, `message`
and `correlation_id` (and `trace_id` when the request is traced). Every response carries X-Correlation-ID. See
docs/rest.md.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from opentelemetry.trace import Tracer
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import Receive, Scope, Send

from app.admission import AdmissionGate
from app.auth import AuthError, Caller, authenticate
from app.cache import Executed, QueryCache, Served, body_digest, rest_cache_key
from app.compression import ACCEPT_ENCODING, GZIP, Compression
from app.errors import Unavailable
from app.limits import ApiLimits
from app.metrics import REQUEST_SECONDS, REQUESTS
from app.reads import status
from app.reads.context import CORRELATION_HEADER, correlation_id, new_context
from app.reads.loaders import Loaders
from app.replicas import Replicas
from app.rest import params as rest_params
from app.rest import shape as rest_shape
from app.rest.openapi import document_bytes
from db.reads import BatchQuery
from infra import cache_keys as ck
from infra.breaker import CircuitBreaker
from infra.settings import Settings
from infra.trace_ids import current_trace_id

log = structlog.get_logger(__name__)

PREFIX = "/internal/v1"
BATCH_STATUS_PATH = "/batches/{batch_id}/status"
USER_BATCHES_PATH = "/batches/user/{user_id}"
OPENAPI_PATH = "/openapi.json"

SHAPE_REVISION = "1"
"""Bump when a translation changes without the OpenAPI document changing: cached bodies of the old shape are then
never served (the cache key's version includes it)."""
CACHE_VERSION = hashlib.sha256(SHAPE_REVISION.encode() + b"\n" + document_bytes()).hexdigest()[:16]

_METHODS = ("GET", "HEAD")
_JSON = "application/json"

Json = dict[str, Any]


class Refusal(Exception):
    """A request answered with an error body: the HTTP status, the original's `error`, a code and the detail."""

    def __init__(self, status: int, error: str, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.code = code
        self.message = message
        self.headers = headers or {}


class _AnyMethod:
    """A route's endpoint as an ASGI object: Starlette routes every method to an object (a function only to the
    methods listed), so every method, TRACE and WebDAV's included, gets this API's JSON 405 (`_checked`) rather
    than Starlette's plain text."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self._app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def _invalid_parameters(message: str) -> Refusal:
    return Refusal(400, "Invalid parameters", "INVALID_PARAMETER", message)


def error_response(refusal: Refusal, correlation: str) -> Response:
    body = {
        "error": refusal.error,
        "error_code": refusal.code,
        "message": refusal.message,
        "correlation_id": correlation,
    }
    trace_id = current_trace_id()
    if trace_id is not None:
        body["trace_id"] = trace_id
    return Response(orjson.dumps(body), refusal.status, refusal.headers, media_type=_JSON)


def _internal_error(correlation: str) -> Response:
    message = f"Internal error. It was logged with correlation id {correlation}; quote it when reporting."
    return error_response(Refusal(500, "Internal server error", "INTERNAL_ERROR", message), correlation)


def _unavailable(error: Unavailable) -> Refusal:
    # Retryable, unlike a 500: the database is down, the breaker is open (app/reads/session.py) or every execution
    # slot stayed taken (app/admission.py).
    return Refusal(503, "Service unavailable", "SERVICE_UNAVAILABLE", error.message, {"Retry-After": "2"})


def _auth_refusal(error: AuthError) -> Refusal:
    if error.status == 400:  # a repeated or malformed credential header (app/auth.py)
        return _invalid_parameters(error.hint)
    return Refusal(401, error.reason, "UNAUTHENTICATED", error.hint)


# --- ETags --------------------------------------------------------------------------------------------------------


def etag(digest: str, encoding: str | None = None) -> str:
    """A strong validator of one representation: the body's digest (`app.cache.body_digest`, 128 bits of its
    sha256), with `-gzip` for the gzipped one (RFC 9110 §8.8.3: each content coding is a representation of its own).
    """
    return f'"{digest}-{encoding}"' if encoding else f'"{digest}"'


def none_match(header: str | None, current: str) -> bool:
    """Whether If-None-Match names the current ETag. Weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`."""
    if header is None:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == current:
            return True
    return False


# --- reads --------------------------------------------------------------------------------------------------------


async def batch_status_document(loaders: Loaders, batch_id: str) -> Json:
    found = await loaders.batch_with_essays(batch_id)
    if found is None:
        # The same answer for another user's batch (with X-User-ID) as for one that does not exist.
        raise Refusal(404, "Batch not found", "BATCH_NOT_FOUND", f"No batch with id {batch_id!r}.")
    return rest_shape.batch_status(*found)


async def user_batches_document(loaders: Loaders, user_id: str, params: rest_params.ListParams) -> Json:
    statuses = () if params.status is None else (status.matching([params.status], status.BATCH_STATUSES),)
    query = BatchQuery(user_id=user_id, statuses=statuses)
    found, total = await loaders.batch_slice_with_essays(query, params.limit, params.offset)
    documents = [rest_shape.batch_status(batch, essays) for batch, essays in found]
    return rest_shape.user_batches(documents, params.limit, params.offset, total)


# --- HTTP ---------------------------------------------------------------------------------------------------------

Handler = Callable[[Request, Caller, str], Awaitable[Response]]


class RestApi:
    """The routes and what they share: settings, limits, the engine, the database circuit breaker, the execution
    limit and (when configured) the result cache and the loaders' tracer."""

    def __init__(
        self,
        settings: Settings,
        limits: ApiLimits,
        engine: Callable[[], AsyncEngine],
        cache: QueryCache | None = None,
        breaker: CircuitBreaker | None = None,
        compression: Compression | None = None,
        tracer: Tracer | None = None,
        gate: AdmissionGate | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        self._replicas = replicas
        self._tracer = tracer
        self._settings = settings
        self._compression = compression or Compression.from_settings(settings)
        self._gate = gate
        self._limits = limits
        self._engine = engine
        self.cache = cache
        # The GraphQL endpoint's settings: after 3 failed reads, fail fast for 2 s, then let one request probe.
        self.breaker = breaker or CircuitBreaker(threshold=3, reset_after=2.0)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(BATCH_STATUS_PATH, _AnyMethod(self._endpoint("get_batch_status", self._batch_status))),
            Route(USER_BATCHES_PATH, _AnyMethod(self._endpoint("get_user_batches", self._user_batches))),
            Route(OPENAPI_PATH, _AnyMethod(self._endpoint("openapi", self._openapi, authenticated=False))),
            # Anything else under the prefix: the same JSON errors as the real routes, not Starlette's text.
            Route("/{path:path}", _AnyMethod(self._endpoint("unknown_route", self._unknown))),
        ]

    def _endpoint(
        self, name: str, handler: Handler, authenticated: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        """`handler` with the shared parts: method check, authentication, error bodies, correlation id, metrics.

        `name` labels the metrics (the original's endpoint names for the two data routes)."""

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            correlation = correlation_id(request.headers)
            try:
                response = await self._checked(request, correlation, handler, authenticated)
            except Refusal as refusal:
                response = error_response(refusal, correlation)
            except Unavailable as exc:
                response = error_response(_unavailable(exc), correlation)
            except Exception as exc:
                # The caller gets only the correlation id; the log line under it has the exception and traceback.
                log.error(
                    "rest.internal_error",
                    correlation_id=correlation,
                    path=request.url.path,
                    error=str(exc),
                    exc_info=exc,
                )
                response = _internal_error(correlation)
            response.headers[CORRELATION_HEADER] = correlation
            response = self._compression.response(response, self._gzip_wanted(request))
            REQUESTS.labels("rest", name, str(response.status_code)).inc()
            REQUEST_SECONDS.labels("rest", name).observe(time.perf_counter() - started)
            return response

        return endpoint

    def _gzip_wanted(self, request: Request) -> bool:
        return self._compression.wanted(request.headers.get(ACCEPT_ENCODING))

    async def _checked(self, request: Request, correlation: str, handler: Handler, authenticated: bool) -> Response:
        if request.method not in _METHODS:
            message = f"{request.method} is not supported here; use GET."
            raise Refusal(405, "Method not allowed", "METHOD_NOT_ALLOWED", message, {"Allow": ", ".join(_METHODS)})
        caller = authenticate(request.headers.raw, self._settings) if authenticated else Caller("", None)
        if isinstance(caller, AuthError):
            raise _auth_refusal(caller)
        return await handler(request, caller, correlation)

    async def _batch_status(self, request: Request, caller: Caller, correlation: str) -> Response:
        batch_id = request.path_params["batch_id"]
        if not (rest_params.valid_id(batch_id) and rest_params.utf8_path(request.scope.get("raw_path"))):
            message = f"batch_id must be 1 to {rest_params.MAX_ID_LENGTH} printable characters of UTF-8."
            raise Refusal(400, "Invalid batch ID", "INVALID_PARAMETER", message)
        path = f"{PREFIX}/batches/{batch_id}/status"
        return await self._serve(request, caller, correlation, path, [], lambda lo: batch_status_document(lo, batch_id))

    async def _user_batches(self, request: Request, caller: Caller, correlation: str) -> Response:
        user_id = request.path_params["user_id"]
        if not (rest_params.valid_id(user_id) and rest_params.utf8_path(request.scope.get("raw_path"))):
            message = f"user_id must be 1 to {rest_params.MAX_ID_LENGTH} printable characters of UTF-8."
            raise _invalid_parameters(message)
        if caller.user_id is not None and caller.user_id != user_id:
            message = "The path's user id must match the X-User-ID header: a user can list only their own batches."
            raise Refusal(403, "Forbidden", "FORBIDDEN", message)
        params = rest_params.list_params({name: request.query_params.getlist(name) for name in request.query_params})
        if isinstance(params, rest_params.InvalidParameter):
            raise _invalid_parameters(params.message)
        path = f"{PREFIX}/batches/user/{user_id}"
        return await self._serve(
            request,
            caller,
            correlation,
            path,
            params.canonical(),
            lambda lo: user_batches_document(lo, user_id, params),
        )

    async def _openapi(self, request: Request, caller: Caller, correlation: str) -> Response:
        return Response(document_bytes(), media_type=_JSON)

    async def _unknown(self, request: Request, caller: Caller, correlation: str) -> Response:
        raise Refusal(404, "Not found", "NOT_FOUND", f"No route {request.url.path}; see {PREFIX}{OPENAPI_PATH}.")

    async def _serve(
        self,
        request: Request,
        caller: Caller,
        correlation: str,
        path: str,
        params: list[tuple[str, str]],
        build: Callable[[Loaders], Awaitable[Json]],
    ) -> Response:
        """Build the document in a fresh context (its snapshot opens inside `execute`, after the cache's), through
        the cache when there is one, and answer with the bytes (gzipped from a memoized compressed form if the
        request prefers it and the cache stored them), their representation's ETag, or 304."""
        refused: Refusal | None = None

        async def execute() -> Executed:
            nonlocal refused
            context = new_context(
                self._engine(),
                caller,
                correlation,
                self._limits,
                self.breaker,
                tracer=self._tracer,
                gate=self._gate,
                replicas=self._replicas,
            )
            try:
                document = await build(context.loaders)
            except Refusal as refusal:
                # Error bodies carry the correlation id: never stored, answered by this request only.
                refused = refusal
                return Executed(b"", cacheable=False)
            finally:
                await context.close()
            tags = ck.read_tags(context.read_batches, context.read_user_lists)
            return Executed(orjson.dumps(document), tags, context.tags.cacheable, context.session.replayed)

        if self.cache is None:
            served = Served((await execute()).body, "bypass")
        else:
            served = await self.cache.fetch(rest_cache_key(path, params, caller.user_id, CACHE_VERSION), execute)
        if refused is not None:
            raise refused
        body = served.body
        gzip = self._compression.compresses(len(body), self._gzip_wanted(request))
        tag = etag(served.digest or body_digest(body), GZIP if gzip else None)
        headers = {"ETag": tag, "X-Cache": served.status, "Cache-Control": "private, no-cache"}
        if none_match(request.headers.get("if-none-match"), tag):
            return Response(status_code=304, headers={"ETag": tag, "Cache-Control": "private, no-cache"})
        if gzip:
            headers["Content-Encoding"] = GZIP
            body = self._compression.cached(body, served.digest, len(body))
        return Response(body, 200, headers, media_type=_JSON)


def routes(
    settings: Settings,
    limits: ApiLimits,
    engine: Callable[[], AsyncEngine],
    cache: QueryCache | None = None,
    breaker: CircuitBreaker | None = None,
    compression: Compression | None = None,
    tracer: Tracer | None = None,
    gate: AdmissionGate | None = None,
    replicas: Replicas | None = None,
) -> list[BaseRoute]:
    """The routes to mount at PREFIX. Pass the process's QueryCache to have responses cached (and evicted), the
    GraphQL endpoint's breaker to share one view of the database's health (else the routes get their own), the
    app's Compression to share its memo of compressed answers (else one is made from settings), a tracer when
    tracing is on, the process's admission gate to count REST executions against the same limit, and its read
    replicas when it has them."""
    return RestApi(settings, limits, engine, cache, breaker, compression, tracer, gate, replicas).routes()
