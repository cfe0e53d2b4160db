"""The OpenAPI 3.1 document of the REST compatibility routes, built from the same constants the shim uses.

Enum values come from app/reads/status.py and the limits from app/rest/params.py, so the document cannot drift from the
code without the checked-in copy (`openapi/rest.json`) differing from what is served, which a test catches.
After a change:

    .venv/bin/python -m app.rest.openapi > openapi/rest.json

and review the difference: it is what the REST callers see.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from app.reads.status import BATCH_STATUSES, CLIENT_STATUSES, PHASES, PROCESSING_STAGES
from app.rest import params as rest_params
from infra.version import VERSION

Json = dict[str, Any]

NAIVE_DATETIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?$"

# (HTTP status, `error`, `error_code`): every error the routes answer with.
ERRORS: tuple[tuple[int, str, str], ...] = (
    (400, "Invalid parameters", "INVALID_PARAMETER"),
    (400, "Invalid batch ID", "INVALID_PARAMETER"),
    (401, "Missing authentication", "UNAUTHENTICATED"),
    (401, "Invalid credentials", "UNAUTHENTICATED"),
    (401, "Empty X-User-ID", "UNAUTHENTICATED"),
    (403, "Forbidden", "FORBIDDEN"),
    (404, "Batch not found", "BATCH_NOT_FOUND"),
    (404, "Not found", "NOT_FOUND"),
    (405, "Method not allowed", "METHOD_NOT_ALLOWED"),
    (500, "Internal server error", "INTERNAL_ERROR"),
    (503, "Service unavailable", "SERVICE_UNAVAILABLE"),
)


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable_ref(name: str) -> Json:
    return {"anyOf": [_ref(name), {"type": "null"}]}


def _nullable(type_name: str, description: str) -> Json:
    return {"type": [type_name, "null"], "description": description}


def _enum(values: tuple[str, ...], description: str, nullable: bool = False) -> Json:
    if nullable:
        return {"type": ["string", "null"], "enum": [*values, None], "description": description}
    return {"type": "string", "enum": list(values), "description": description}


def _object(properties: Json, description: str, closed: bool = True) -> Json:
    schema: Json = {"type": "object", "description": description, "properties": properties}
    schema["required"] = list(properties)
    if closed:
        schema["additionalProperties"] = False
    return schema


def _schemas() -> Json:
    text = "string"
    return {
        "NaiveUtcDateTime": {
            "type": "string",
            "pattern": NAIVE_DATETIME_PATTERN,
            "description": "A UTC time without zone, as Python's isoformat() writes a naive datetime: microseconds "
            "only when non-zero. Not RFC 3339 (no offset): the original service wrote it this way.",
            "examples": ["2025-08-01T12:00:00", "2025-08-01T12:00:00.123456"],
        },
        "ErrorDetail": _object(
            {
                "error_code": _nullable(text, "e.g. SPELLCHECK_SERVICE_ERROR or PROCESSING_ERROR."),
                "message": _nullable(text, "Human-readable message."),
                "correlation_id": _nullable(text, "Correlation id of the event that reported the error."),
                "timestamp": _nullable(text, "When the error was recorded: ISO 8601 with offset, as stored."),
                "service": _nullable(text, "The service that recorded the error."),
                "operation": _nullable(text, "The operation that failed."),
                "details": {"description": "Structured details, as recorded (any JSON)."},
                "stack_trace": _nullable(text, "Stack trace, when recorded."),
                "trace_id": _nullable(text, "Tracing trace id, when known."),
                "span_id": _nullable(text, "Tracing span id, when known."),
            },
            "The platform's ErrorDetail JSON, with exactly these keys.",
        ),
        "StorageReferenceMetadata": _object(
            {
                "references": {
                    "type": "object",
                    "description": "ContentType value → its entry (e.g. {storage_id, path}).",
                    "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}},
                }
            },
            "Where content lives in the content service, as the registration event sent it.",
            closed=False,
        ),
        "EssayResultResponse": _object(
            {
                "essay_id": {"type": "string"},
                "filename": _nullable(text, "The uploaded file's name (gen 2 slot assignments; null for gen 1)."),
                "file_upload_id": _nullable(text, "The upload the essay came from."),
                "spellcheck_status": _enum(PROCESSING_STAGES, "ProcessingStage of the spellcheck.", nullable=True),
                "spellcheck_correction_count": _nullable("integer", "Corrections the spellchecker made."),
                "spellcheck_corrected_text_storage_id": _nullable(text, "Storage id of the corrected text."),
                "spellcheck_error_detail": _nullable_ref("ErrorDetail"),
                "cj_assessment_status": _enum(
                    PROCESSING_STAGES, "ProcessingStage of the CJ assessment.", nullable=True
                ),
                "cj_rank": _nullable("integer", "Rank in the comparative judgement (1 = best)."),
                "cj_score": _nullable("number", "CJ score (gen 1 score, gen 2 Bradley-Terry score)."),
                "cj_assessment_error_detail": _nullable_ref("ErrorDetail"),
                "last_updated": _ref("NaiveUtcDateTime"),
            },
            "One essay of a batch with its spellcheck and CJ assessment results.",
        ),
        "BatchStatusResponse": _object(
            {
                "batch_id": {"type": "string"},
                "user_id": {"type": "string"},
                "overall_status": _enum(CLIENT_STATUSES, "BatchClientStatus, mapped as EVENTS.md §8 says."),
                "essay_count": {"type": "integer", "description": "Essays the batch was registered with."},
                "completed_essay_count": {"type": "integer"},
                "failed_essay_count": {"type": "integer"},
                "requested_pipeline": _nullable(text, "Always null: no consumed event names it."),
                "current_phase": _enum(
                    PHASES, "PhaseName while the internal status is processing_pipelines, else null.", nullable=True
                ),
                "essays": {"type": "array", "items": _ref("EssayResultResponse"), "description": "By essay id."},
                "created_at": _ref("NaiveUtcDateTime"),
                "last_updated": _ref("NaiveUtcDateTime"),
                "processing_started_at": _nullable_ref("NaiveUtcDateTime"),
                "processing_completed_at": _nullable_ref("NaiveUtcDateTime"),
                "assignment_id": _nullable(text, "The assignment, once a CJ assessment result named it."),
                "student_prompt_ref": _nullable_ref("StorageReferenceMetadata"),
            },
            "A batch with all of its essays (gen 2 shape).",
        ),
        "Pagination": _object(
            {
                "limit": {"type": "integer", "minimum": 1, "maximum": rest_params.MAX_LIMIT},
                "offset": {"type": "integer", "minimum": 0},
                "total": {"type": "integer", "minimum": 0, "description": "All of the user's batches that match."},
            },
            "The page's position in the whole list.",
        ),
        "UserBatchesResponse": _object(
            {
                "batches": {"type": "array", "items": _ref("BatchStatusResponse"), "description": "Newest first."},
                "pagination": _ref("Pagination"),
            },
            "One page of a user's batches.",
        ),
        "ErrorResponse": _error_body_schema(),
    }


def _error_body_schema() -> Json:
    schema = _object(
        {
            "error": {
                "type": "string",
                "enum": sorted({error for _, error, _ in ERRORS}),
                "description": "The original service's message; callers match on it.",
            },
            "error_code": {"type": "string", "enum": sorted({code for _, _, code in ERRORS})},
            "message": {"type": "string", "description": "What exactly was wrong."},
            "correlation_id": {"type": "string", "description": "Also in the X-Correlation-ID header."},
            "trace_id": {
                "type": "string",
                "pattern": "^[0-9a-f]{32}$",
                "description": "The request's OpenTelemetry trace id; only when tracing is on (docs/tracing.md).",
            },
        },
        "Every error body.",
    )
    schema["required"].remove("trace_id")
    return schema


def _header(description: str) -> Json:
    return {"description": description, "schema": {"type": "string"}}


_HEADERS: Json = {
    "X-Correlation-ID": _header("The request's X-Correlation-ID when it is a plain token, else a new uuid4."),
    "ETag": _header("Strong validator: a hash of the body. Send it back in If-None-Match."),
    "X-Cache": _header("How the body was produced: hit, miss, coalesced or bypass (see docs/cache.md)."),
}


def _error_response(statuses: tuple[int, ...], retry_after: bool = False) -> Json:
    errors = [f"`{error}`" for status, error, _ in ERRORS if status in statuses]
    headers = {"X-Correlation-ID": _HEADERS["X-Correlation-ID"]}
    if retry_after:
        headers["Retry-After"] = _header("Seconds to wait before retrying.")
    return {
        "description": " or ".join(errors),
        "headers": headers,
        "content": {"application/json": {"schema": _ref("ErrorResponse")}},
    }


def _ok(schema: str, description: str) -> Json:
    return {
        "description": description,
        "headers": _HEADERS,
        "content": {"application/json": {"schema": _ref(schema)}},
    }


_NOT_MODIFIED: Json = {
    "description": "If-None-Match matched the current ETag; no body.",
    "headers": {"ETag": _HEADERS["ETag"], "X-Correlation-ID": _HEADERS["X-Correlation-ID"]},
}


def _common_parameters() -> list[Json]:
    return [
        {
            "name": "X-User-ID",
            "in": "header",
            "required": False,
            "description": "The end user the calling service acts for: only that user's batches are visible.",
            "schema": {"type": "string", "minLength": 1},
        },
        {
            "name": "X-Correlation-ID",
            "in": "header",
            "required": False,
            "description": "Used in logs and echoed when it is a plain token ([A-Za-z0-9._:-], up to 128).",
            "schema": {"type": "string"},
        },
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "ETags of a copy the caller holds; 304 when one is current.",
            "schema": {"type": "string"},
        },
    ]


def _id_parameter(name: str, description: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": rest_params.MAX_ID_LENGTH},
    }


def _paths() -> Json:
    return {
        "/batches/{batch_id}/status": {
            "get": {
                "operationId": "getBatchStatus",
                "summary": "A batch with all of its essays and their results.",
                "parameters": [_id_parameter("batch_id", "The batch id."), *_common_parameters()],
                "responses": {
                    "200": _ok("BatchStatusResponse", "The batch."),
                    "304": _NOT_MODIFIED,
                    "400": _error_response((400,)),
                    "401": _error_response((401,)),
                    "404": _error_response((404,)),
                    "500": _error_response((500,)),
                    "503": _error_response((503,), retry_after=True),
                },
            }
        },
        "/batches/user/{user_id}": {
            "get": {
                "operationId": "getUserBatches",
                "summary": "A user's batches, newest first, with offset pagination.",
                "parameters": [
                    _id_parameter("user_id", "Whose batches. With X-User-ID, it must be that user."),
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": rest_params.MAX_LIMIT,
                            "default": rest_params.DEFAULT_LIMIT,
                        },
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0, "maximum": rest_params.MAX_OFFSET, "default": 0},
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "Only batches with this internal BatchStatus (EVENTS.md §7, both generations).",
                        "schema": {"type": "string", "enum": list(BATCH_STATUSES)},
                    },
                    *_common_parameters(),
                ],
                "responses": {
                    "200": _ok("UserBatchesResponse", "One page of the user's batches."),
                    "304": _NOT_MODIFIED,
                    "400": _error_response((400,)),
                    "401": _error_response((401,)),
                    "403": _error_response((403,)),
                    "500": _error_response((500,)),
                    "503": _error_response((503,), retry_after=True),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document. Needs no credentials: it holds no data.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def document() -> Json:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Result Aggregator Service: REST compatibility API",
            "version": VERSION,  # the package's: the checked-in copy is compared without it
            "description": "The original service's REST routes in their gen 2 shape, served by RAS for existing "
            "callers. Details and decisions: docs/rest.md. Unknown query parameters are ignored.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "servers": [{"url": "/internal/v1"}],
        "security": [{"InternalApiKey": [], "ServiceId": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "InternalApiKey": {"type": "apiKey", "in": "header", "name": "X-Internal-API-Key"},
                "ServiceId": {"type": "apiKey", "in": "header", "name": "X-Service-ID"},
            },
        },
    }


def render(doc: Json) -> bytes:
    """A document as served and as checked in: indented JSON, one trailing newline."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


@cache
def document_bytes() -> bytes:
    return render(document())


if __name__ == "__main__":
    print(document_bytes().decode(), end="")
