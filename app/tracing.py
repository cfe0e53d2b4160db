"""The API's request spans, when tracing is on (infra/tracing.py): ASGI middleware continuing the caller's trace.

The request's trace context headers (W3C `traceparent` and `tracestate` unless OTEL_PROPAGATORS says otherwise)
are read with OpenTelemetry's propagation API, and a server span is current while the app answers: everything the
request does (the cache lookup, parsing, validation, execution, each loader and its statements) is a span under it,
and every log line and error of the request carries its trace id. The span is named by method and route template
(`POST /graphql`, `GET /internal/v1/batches/{batch_id}/status`), as a tracing backend groups requests.

Only requests under `paths` are traced (`create_app` gives /graphql and the REST shim): probes and `/metrics` are
scraped every few seconds and would drown them; WebSocket connections live as long as their subscriptions.

Mounted only when tracing is on: off, the app is not wrapped at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class TracedRequests:
    def __init__(self, app: ASGIApp, tracer: Tracer, paths: Sequence[str]) -> None:
        self._app = app
        self._tracer = tracer
        self._paths = tuple(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self._paths):
            await self._app(scope, receive, send)
            return
        # ASGI gives header names in lower case, as the propagators look them up.
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        method = scope["method"]
        with self._tracer.start_as_current_span(
            method,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    _responded(span, message["status"])
                await send(message)

            try:
                await self._app(scope, receive, sending)
            finally:
                _name_by_route(span, scope, method)


def _responded(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)


def _name_by_route(span: Span, scope: Scope, method: str) -> None:
    """The route the router matched (Starlette notes it in the scope, under a mount with the mount's path as
    `root_path`); a request no route matched keeps the bare method, as the conventions ask."""
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str):
        template = scope.get("root_path", "") + route
        span.set_attribute("http.route", template)
        span.update_name(f"{method} {template}")
