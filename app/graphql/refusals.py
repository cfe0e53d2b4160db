"""Requests the endpoint refuses before Strawberry runs anything, answered with GraphQL-shaped error bodies under the
request's response media type (app/graphql/media.py): missing or wrong credentials (401), a body above the size limit
(413), a request app/graphql/operation.py refuses (a malformed one, 400; a text over the limits), and Strawberry's
own HTTP-level refusals (an unknown operation name, a mutation over GET) mapped to codes."""

from __future__ import annotations

from starlette.responses import JSONResponse, PlainTextResponse, Response

from app.auth import AuthError
from app.errors import BAD_USER_INPUT, LIMIT_EXCEEDED, UNAUTHENTICATED, error_body
from app.graphql.media import JSON, MediaType, request_error_status
from app.graphql.operation import Refusal
from app.metrics import GRAPHQL_ERRORS

_HTTP_CODES = {400: BAD_USER_INPUT, 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def unauthenticated(error: AuthError, correlation: str, media: MediaType = JSON) -> Response:
    """401 for missing or wrong credentials; 400 for credential headers that are malformed (app/auth.py)."""
    code = BAD_USER_INPUT if error.status == 400 else UNAUTHENTICATED
    return JSONResponse(error_body(error.hint, code, correlation), status_code=error.status, media_type=media)


def too_large(limit: int, correlation: str, media: MediaType = JSON) -> Response:
    message = f"Request body exceeds the limit of {limit} bytes."
    body = error_body(message, LIMIT_EXCEEDED, correlation, limit=limit)
    return JSONResponse(body, status_code=413, media_type=media)


def refused(refusal: Refusal, correlation: str, media: MediaType) -> Response:
    """A request refused before GraphQL parsing. A GraphQL-level refusal (a limit) answers `application/json` as
    an executed request would: 200 with `"data": null`; `application/graphql-response+json` gets its 4xx, no `data`."""
    body = error_body(refusal.message, refusal.code, correlation, **refusal.extensions)
    if refusal.status >= 400:
        return JSONResponse(body, status_code=refusal.status, media_type=media)
    GRAPHQL_ERRORS.labels(refusal.code).inc()  # counted as the same error was when Strawberry returned it
    if media == JSON:
        return JSONResponse({"data": None, **body}, status_code=refusal.status, media_type=media)
    return JSONResponse(body, status_code=request_error_status(refusal.code), media_type=media)


def http_error(message: str, status_code: int, correlation: str, media: MediaType = JSON) -> Response:
    if status_code >= 500:
        return PlainTextResponse("Internal Server Error", status_code=500)
    code = _HTTP_CODES.get(status_code, BAD_USER_INPUT)
    return JSONResponse(error_body(message, code, correlation), status_code=status_code, media_type=media)
