"""Errors as callers see them: every error carries `extensions.code` and `extensions.correlationId`, and
`extensions.traceId` when the request is traced (docs/tracing.md).

Codes: UNAUTHENTICATED (401, before execution), FORBIDDEN, BAD_USER_INPUT, LIMIT_EXCEEDED, SERVICE_UNAVAILABLE (the
database cannot be reached, or the process is at its execution limit: the response is HTTP 503 with Retry-After) and
INTERNAL; for persisted documents (app/graphql/persisted.py) Apollo's PERSISTED_QUERY_NOT_FOUND and
PERSISTED_QUERY_NOT_SUPPORTED, and DOCUMENT_NOT_TRUSTED (a text that is no trusted document, RAS_DOCUMENTS=trusted).
An INTERNAL error's message never shows what went wrong inside; the exception is logged with the correlation id the
error carries, so a report quoting it finds the log line.

The reads and REST raise and answer with these; app/graphql/errors.py gives a GraphQL result's errors their codes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from infra.trace_ids import current_trace_id

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
BAD_USER_INPUT = "BAD_USER_INPUT"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
INTERNAL = "INTERNAL"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
DOCUMENT_NOT_TRUSTED = "DOCUMENT_NOT_TRUSTED"


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


class Unavailable(ApiError):
    """Retryable: answered with HTTP 503 and Retry-After."""

    code = SERVICE_UNAVAILABLE


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached (or the circuit breaker is open), or no pooled connection came free in time."""


class Overloaded(Unavailable):
    """The process's execution slots stayed taken for the whole admission wait (app/admission.py)."""


def trace_extension() -> dict[str, str]:
    """`{"traceId": …}` of the request's trace when it is traced, else nothing: a report quoting an error then leads
    to its trace as the correlation id leads to its log lines."""
    trace_id = current_trace_id()
    return {} if trace_id is None else {"traceId": trace_id}


def error_body(message: str, code: str, correlation_id: str, **extensions: Any) -> dict[str, Any]:
    """A GraphQL-shaped response body for a request refused before execution (auth, malformed HTTP)."""
    fields = {"code": code, "correlationId": correlation_id, **trace_extension(), **extensions}
    return {"errors": [{"message": message, "extensions": fields}]}
