"""Errors as callers see them: every error carries `extensions.code` and `extensions.correlationId`.

Codes: UNAUTHENTICATED (401, before execution), FORBIDDEN, BAD_USER_INPUT, LIMIT_EXCEEDED, SERVICE_UNAVAILABLE (the
database cannot be reached: the response is HTTP 503 with Retry-After) and INTERNAL. An INTERNAL
error's message never shows what went wrong inside; the exception is logged with the correlation id the error
carries, so a report quoting it finds the log line.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import structlog
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

log = structlog.get_logger(__name__)

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
BAD_USER_INPUT = "BAD_USER_INPUT"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
INTERNAL = "INTERNAL"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class ApiError(Exception):
    """An error the caller caused and can act on; its message is shown as is."""

    code: ClassVar[str] = BAD_USER_INPUT

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class BadUserInput(ApiError):
    code = BAD_USER_INPUT


class Forbidden(ApiError):
    code = FORBIDDEN


class LimitExceeded(ApiError):
    code = LIMIT_EXCEEDED


class DatabaseUnavailable(ApiError):
    code = SERVICE_UNAVAILABLE


def error_body(message: str, code: str, correlation_id: str, **extensions: Any) -> dict[str, Any]:
    """A GraphQL-shaped response body for a request refused before execution (auth, malformed HTTP)."""
    error = {"message": message, "extensions": {"code": code, "correlationId": correlation_id, **extensions}}
    return {"errors": [error]}


def _classify(error: GraphQLError) -> tuple[str, dict[str, Any]]:
    """The error's code and extra extensions, or INTERNAL when it is not one the caller should see."""
    original = error.original_error
    if isinstance(original, ApiError):
        return original.code, original.extensions
    own = dict(error.extensions or {})
    if original is None and isinstance(own.get("code"), str):
        return str(own.pop("code")), own
    # Errors outside any field (syntax, validation, variable coercion) describe the request itself. An error in
    # a field that is not an ApiError is a fault of the service, whatever its type.
    if error.path is None and (original is None or isinstance(original, GraphQLError | ValueError | TypeError)):
        return BAD_USER_INPUT, {}
    return INTERNAL, {}


def shape(error: GraphQLError, correlation_id: str) -> GraphQLError:
    code, extensions = _classify(error)
    message = error.message
    if code == INTERNAL:
        log.error(
            "graphql.internal_error",
            correlation_id=correlation_id,
            path=error.path,
            error=error.message,
            exc_info=error.original_error or error,
        )
        message = f"Internal error. It was logged with correlation id {correlation_id}; quote it when reporting."
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": code, "correlationId": correlation_id, **extensions},
    )


class ErrorShaping(SchemaExtension):
    """Gives every error of an operation its code and correlation id, masking internal ones (see module doc)."""

    def on_operation(self) -> Iterator[None]:
        yield
        self._shape(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # Each result a WebSocket operation sends (every update of a subscription) is shaped the same way.
        self._shape(result)
        yield

    def _shape(self, result: Any) -> None:
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            if all(isinstance((e.extensions or {}).get("correlationId"), str) for e in errors):
                return  # already shaped (a streamed result is seen by both hooks)
            correlation_id = getattr(self.execution_context.context, "correlation_id", None) or str(uuid.uuid4())
            result.errors = [shape(error, correlation_id) for error in errors]
