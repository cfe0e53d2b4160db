"""The `/graphql` endpoint: Strawberry's ASGI view with this service's authentication, context and error bodies.

Request flow: the GraphiQL page (a browser's GET without a query) needs no credentials, since it holds no data;
every other request is authenticated first and refused with 401 and a GraphQL-shaped body. An authenticated
request gets a fresh `RequestContext`, Strawberry parses it and runs the operation in `execute_single` (the one
place where operations execute, and so the place a result cache wraps), and the context's database snapshot is
closed when the response is built. Every response carries `X-Correlation-ID`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import orjson
import structlog
from cross_web import HTTPException
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.types import ExecutionResult

from app import graphiql
from app.auth import AuthError, authenticate
from app.context import CORRELATION_HEADER, RequestContext, correlation_id, new_context
from app.errors import BAD_USER_INPUT, INTERNAL, LIMIT_EXCEEDED, UNAUTHENTICATED, error_body
from app.limits import ApiLimits
from ras.settings import Settings

log = structlog.get_logger(__name__)

_HTTP_CODES = {400: BAD_USER_INPUT, 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


class GraphQLEndpoint(GraphQL[RequestContext, None]):
    def __init__(self, schema: Any, settings: Settings, limits: ApiLimits, engine: Callable[[], AsyncEngine]) -> None:
        super().__init__(schema, graphql_ide="graphiql" if limits.graphiql else None, allow_queries_via_get=True)
        self.settings = settings
        self.limits = limits
        self._engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no subscriptions: the schema has none
            return
        request = Request(scope, _capped(receive, self.limits.max_request_bytes))
        correlation = correlation_id(request.headers)
        request.state.correlation_id = correlation
        try:
            response = await self._respond(request, correlation)
        except _BodyTooLarge:
            response = _too_large(self.limits.max_request_bytes, correlation)
        response.headers[CORRELATION_HEADER] = correlation
        await response(scope, receive, send)

    async def _respond(self, request: Request, correlation: str) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_request_bytes:
            return _too_large(self.limits.max_request_bytes, correlation)
        if self.should_render_graphql_ide(self.request_adapter_class(request)):
            if not self.limits.graphiql:
                return _http_error("GraphiQL is disabled on this server (RAS_GRAPHIQL_ENABLED).", 404, correlation)
            return await self.render_graphql_ide(request)
        caller = authenticate(request.headers, self.settings)
        if isinstance(caller, AuthError):
            return JSONResponse(error_body(caller.hint, UNAUTHENTICATED, correlation), status_code=401)
        context = new_context(self._engine(), caller, correlation, self.limits)
        try:
            return await self.run(request, context=context)
        except HTTPException as exc:
            return _http_error(exc.reason, exc.status_code, correlation)
        finally:
            await context.close()

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
        return response

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


def _http_error(message: str, status_code: int, correlation: str) -> Response:
    if status_code >= 500:
        return PlainTextResponse("Internal Server Error", status_code=500)
    code = _HTTP_CODES.get(status_code, BAD_USER_INPUT)
    return JSONResponse(error_body(message, code, correlation), status_code=status_code)


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
