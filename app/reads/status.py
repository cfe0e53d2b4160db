"""What the stored status text means to callers (EVENTS.md §7 and §8), shared by the GraphQL API and the REST shim.

Statuses are stored exactly as the platform sent them, so this module is the one place that knows which values exist,
how an internal batch status maps to the gateway-facing client status, and which phase a running batch is in.
"""

from __future__ import annotations

from collections.abc import Iterable

from db.reads import StatusMatch
from db.rows import PhaseProgress

# BatchStatus values of both contract generations (§7). `guest_class_ready` is gen 1 only,
# `student_validation_completed` gen 2 only.
BATCH_STATUSES: tuple[str, ...] = (
    "awaiting_content_validation",
    "content_ingestion_failed",
    "awaiting_pipeline_configuration",
    "ready_for_pipeline_execution",
    "processing_pipelines",
    "awaiting_student_validation",
    "validation_timeout_processed",
    "guest_class_ready",
    "student_validation_completed",
    "completed_successfully",
    "completed_with_failures",
    "failed_critically",
    "cancelled",
)

# BatchClientStatus values of gen 2, the shape the gateway reads.
CLIENT_STATUSES: tuple[str, ...] = (
    "pending_content",
    "ready",
    "processing",
    "completed_successfully",
    "completed_with_failures",
    "failed",
    "cancelled",
)

# ProcessingStage values (both generations). RAS itself writes only completed/failed.
PROCESSING_STAGES: tuple[str, ...] = ("pending", "initialized", "processing", "completed", "failed", "cancelled")
TERMINAL_STAGES = frozenset({"completed", "failed", "cancelled"})

# PhaseName values; `student_matching` is gen 2 only.
PHASES: tuple[str, ...] = ("spellcheck", "ai_feedback", "cj_assessment", "nlp", "student_matching")
SPELLCHECK = "spellcheck"
CJ_ASSESSMENT = "cj_assessment"

PROCESSING = "processing"
PROCESSING_PIPELINES = "processing_pipelines"

# §8, gen 2 column. Every value not listed (including one a newer platform adds) falls back to "processing".
_CLIENT_STATUS_OF: dict[str, str] = {
    "awaiting_content_validation": "pending_content",
    "content_ingestion_failed": "failed",
    "awaiting_pipeline_configuration": "pending_content",
    "ready_for_pipeline_execution": "ready",
    "processing_pipelines": PROCESSING,
    "awaiting_student_validation": PROCESSING,
    "validation_timeout_processed": PROCESSING,
    "guest_class_ready": PROCESSING,
    "completed_successfully": "completed_successfully",
    "completed_with_failures": "completed_with_failures",
    "failed_critically": "failed",
    "cancelled": "cancelled",
}


def client_status(status: str) -> str:
    """The gateway-facing status (BatchClientStatus) of an internal batch status."""
    return _CLIENT_STATUS_OF.get(status, PROCESSING)


def internal_statuses(client_statuses: Iterable[str]) -> StatusMatch:
    """The stored batch statuses that map to any of the given client statuses.

    `processing` also stands for every value this service does not know (the §8 fallback), so a filter on it
    matches those too.
    """
    wanted = set(client_statuses)
    values = frozenset(s for s, c in _CLIENT_STATUS_OF.items() if c in wanted)
    return StatusMatch(values, unknown=PROCESSING in wanted, known=frozenset(_CLIENT_STATUS_OF))


def matching(values: Iterable[str], known: Iterable[str], unknown_marker: str = "unknown") -> StatusMatch:
    """Stored values equal to one of `values`; the marker value stands for "any value not in `known`"."""
    wanted = frozenset(values)
    return StatusMatch(wanted - {unknown_marker}, unknown=unknown_marker in wanted, known=frozenset(known))


def current_phase(status: str, progress: PhaseProgress | None) -> str | None:
    """EVENTS.md §8, gen 2: the phase a running batch is in, or None.

    With no essays the original fell back to BOS's `metadata.current_phase`, which no consumed event carries, so
    the answer there is None.
    """
    if status != PROCESSING_PIPELINES or progress is None or progress.essays == 0:
        return None
    if progress.spellcheck_open:
        return SPELLCHECK
    if progress.cj_assessment_open:
        return CJ_ASSESSMENT
    return None
