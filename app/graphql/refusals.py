"""Requests the endpoint refuses before Strawberry runs anything, answered with GraphQL-shaped error bodies:
missing or wrong credentials (401), a body above the size limit (413), and Strawberry's own HTTP-level refusals
(a malformed request, an unknown method) mapped to codes."""

from __future__ import annotations

from starlette.responses import JSONResponse, PlainTextResponse, Response

from app.auth import AuthError
from app.errors import BAD_USER_INPUT, LIMIT_EXCEEDED, UNAUTHENTICATED, error_body

_HTTP_CODES = {400: BAD_USER_INPUT, 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def unauthenticated(error: AuthError, correlation: str) -> Response:
    """401 for missing or wrong credentials; 400 for credential headers that are malformed (app/auth.py)."""
    code = BAD_USER_INPUT if error.status == 400 else UNAUTHENTICATED
    return JSONResponse(error_body(error.hint, code, correlation), status_code=error.status)


def too_large(limit: int, correlation: str) -> Response:
    message = f"Request body exceeds the limit of {limit} bytes."
    return JSONResponse(error_body(message, LIMIT_EXCEEDED, correlation, limit=limit), status_code=413)


def http_error(message: str, status_code: int, correlation: str) -> Response:
    if status_code >= 500:
        return PlainTextResponse("Internal Server Error", status_code=500)
    code = _HTTP_CODES.get(status_code, BAD_USER_INPUT)
    return JSONResponse(error_body(message, code, correlation), status_code=status_code)
