"""Who may read the API's `/metrics`.

The metrics are no user's data, but they name operations, routes and error counts, and the request pool's state:
more than the unauthenticated should learn from the port the gateway reaches. So on the API port `/metrics`
answers only a service calling for itself (the key and an allowed `X-Service-ID`, no `X-User-ID`: a teacher's
request forwarded by a gateway that passes any path through must not read it). Prometheus, which sends no such
headers, scrapes the metrics listener on RAS_METRICS_PORT instead (`app.main.serve`), a port kept off the ingress.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.auth import AuthError, authenticate
from app.errors import BAD_USER_INPUT, FORBIDDEN, UNAUTHENTICATED, error_body
from infra.prometheus import metrics_endpoint
from infra.settings import Settings

Correlation = Callable[[Mapping[str, str]], str]
FOR_A_USER = "The metrics are for services, not for requests made on behalf of a user: omit X-User-ID."


def authenticated_metrics(settings: Settings, correlation: Correlation) -> Callable[[Request], Awaitable[Response]]:
    """The API port's `/metrics`: the registry's text for an authenticated service, else the error JSON (401, 400
    for a repeated or malformed credential header, 403 with X-User-ID)."""

    async def endpoint(request: Request) -> Response:
        caller = authenticate(request.headers.raw, settings)
        if isinstance(caller, AuthError):
            code = UNAUTHENTICATED if caller.status == 401 else BAD_USER_INPUT
            return _refusal(caller.status, caller.hint, code, correlation(request.headers))
        if caller.user_id is not None:
            return _refusal(403, FOR_A_USER, FORBIDDEN, correlation(request.headers))
        return await metrics_endpoint(request)

    return endpoint


def _refusal(status: int, message: str, code: str, correlation: str) -> Response:
    return Response(orjson.dumps(error_body(message, code, correlation)), status, media_type="application/json")
