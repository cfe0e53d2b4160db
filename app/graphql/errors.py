"""A GraphQL result's errors as callers see them (app/errors.py lists the codes): each gets its code and the
operation's correlation id (and trace id, when traced), and an error that is not an `ApiError` the caller caused is
masked as INTERNAL and logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import structlog
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from app.errors import BAD_USER_INPUT, INTERNAL, ApiError, trace_extension

log = structlog.get_logger(__name__)


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
        extensions={"code": code, "correlationId": correlation_id, **trace_extension(), **extensions},
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
