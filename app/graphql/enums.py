"""GraphQL enums and scalars. Enum values are the platform's wire text, so a resolver returns the stored text as is.

Every enum that mirrors a platform enum has an UNKNOWN value: stored text the schema does not list (a value a newer
platform release adds) is reported as UNKNOWN, and the field's `…Code` sibling carries the text itself. A query
therefore never fails on a new value, and a client can still see it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import NewType

import strawberry

from app.reads import status

UNKNOWN = "unknown"

Long = NewType("Long", int)
"""Kafka offsets and lags: 64-bit, beyond GraphQL's 32-bit Int."""

LONG_SCALAR = strawberry.scalar(
    name="Long",
    description="A 64-bit signed integer (Kafka offsets and lags), serialized as a JSON number.",
    serialize=int,
    parse_value=int,
)


def known(value: str, values: frozenset[str]) -> str:
    """The value itself when the enum lists it, else UNKNOWN's value."""
    return value if value in values else UNKNOWN


def wire(member: Enum) -> str:
    """The wire text of an enum member (typed loosely by `strawberry.enum_value`)."""
    return str(member.value)


def _values(enum: type[Enum]) -> frozenset[str]:
    return frozenset(wire(member) for member in enum)


def _check(enum: type[Enum], wire: Iterable[str]) -> None:
    # The enums below are written out for their descriptions; this keeps them equal to app/reads/status.py's lists.
    missing = set(wire) ^ (_values(enum) - {UNKNOWN})
    if missing:
        raise AssertionError(f"{enum.__name__} differs from app/reads/status.py: {sorted(missing)}")


@strawberry.enum(description="A batch's internal status (the platform's BatchStatus, both contract generations).")
class BatchStatus(Enum):
    AWAITING_CONTENT_VALIDATION = strawberry.enum_value(
        "awaiting_content_validation", description="Registered; essays are being uploaded and validated."
    )
    CONTENT_INGESTION_FAILED = strawberry.enum_value(
        "content_ingestion_failed", description="Uploaded content could not be ingested."
    )
    AWAITING_PIPELINE_CONFIGURATION = strawberry.enum_value(
        "awaiting_pipeline_configuration", description="Content is in; waiting for the pipeline to be chosen."
    )
    READY_FOR_PIPELINE_EXECUTION = strawberry.enum_value(
        "ready_for_pipeline_execution", description="Configured and ready to run."
    )
    PROCESSING_PIPELINES = strawberry.enum_value("processing_pipelines", description="Pipeline phases are running.")
    AWAITING_STUDENT_VALIDATION = strawberry.enum_value(
        "awaiting_student_validation", description="Waiting for the teacher to confirm student matches."
    )
    VALIDATION_TIMEOUT_PROCESSED = strawberry.enum_value(
        "validation_timeout_processed", description="Student validation timed out and was handled."
    )
    GUEST_CLASS_READY = strawberry.enum_value("guest_class_ready", description="Gen 1 only: guest class batch ready.")
    STUDENT_VALIDATION_COMPLETED = strawberry.enum_value(
        "student_validation_completed", description="Gen 2 only: student matches confirmed."
    )
    COMPLETED_SUCCESSFULLY = strawberry.enum_value(
        "completed_successfully", description="Every essay went through every phase."
    )
    COMPLETED_WITH_FAILURES = strawberry.enum_value(
        "completed_with_failures", description="Finished; some essays failed a phase."
    )
    FAILED_CRITICALLY = strawberry.enum_value("failed_critically", description="A phase failed for the whole batch.")
    CANCELLED = strawberry.enum_value("cancelled", description="Cancelled.")
    UNKNOWN = strawberry.enum_value(UNKNOWN, description="A status this service does not know; see `statusCode`.")


@strawberry.enum(description="The status the API gateway shows (the platform's gen 2 BatchClientStatus).")
class BatchClientStatus(Enum):
    PENDING_CONTENT = strawberry.enum_value("pending_content", description="Essays are still being uploaded.")
    READY = strawberry.enum_value("ready", description="Ready to start processing.")
    PROCESSING = strawberry.enum_value(
        "processing", description="Being processed; also every internal status this service does not know."
    )
    COMPLETED_SUCCESSFULLY = strawberry.enum_value("completed_successfully", description="Done, without failures.")
    COMPLETED_WITH_FAILURES = strawberry.enum_value("completed_with_failures", description="Done; some essays failed.")
    FAILED = strawberry.enum_value("failed", description="Processing failed.")
    CANCELLED = strawberry.enum_value("cancelled", description="Cancelled.")


@strawberry.enum(description="The stage of one essay in one phase (the platform's ProcessingStage).")
class ProcessingStage(Enum):
    PENDING = strawberry.enum_value("pending", description="Not started.")
    INITIALIZED = strawberry.enum_value("initialized", description="Set up, not yet running.")
    PROCESSING = strawberry.enum_value("processing", description="Running.")
    COMPLETED = strawberry.enum_value("completed", description="Finished successfully.")
    FAILED = strawberry.enum_value("failed", description="Finished with an error; see `error`.")
    CANCELLED = strawberry.enum_value("cancelled", description="Cancelled.")
    UNKNOWN = strawberry.enum_value(UNKNOWN, description="A stage this service does not know; see `statusCode`.")


@strawberry.enum(description="A processing phase of the pipeline (the platform's PhaseName).")
class PhaseName(Enum):
    SPELLCHECK = strawberry.enum_value("spellcheck", description="Spelling correction.")
    AI_FEEDBACK = strawberry.enum_value("ai_feedback", description="AI-written feedback.")
    CJ_ASSESSMENT = strawberry.enum_value("cj_assessment", description="Comparative judgement ranking and grading.")
    NLP = strawberry.enum_value("nlp", description="Text metrics.")
    STUDENT_MATCHING = strawberry.enum_value("student_matching", description="Gen 2: matching essays to students.")
    UNKNOWN = strawberry.enum_value(UNKNOWN, description="A phase this service does not know; see `phaseCode`.")


BATCH_STATUSES = _values(BatchStatus)
CLIENT_STATUSES = _values(BatchClientStatus)
PROCESSING_STAGES = _values(ProcessingStage)
PHASES = _values(PhaseName)

_check(BatchStatus, status.BATCH_STATUSES)
_check(BatchClientStatus, status.CLIENT_STATUSES)
_check(ProcessingStage, status.PROCESSING_STAGES)
_check(PhaseName, status.PHASES)
