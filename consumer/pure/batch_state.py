"""A batch's aggregates as a pure function of its stored facts (EVENTS.md §4.5 rule P and §5.3).

The original service mutated counters as events arrived, so its result depended on arrival order. Here the facts
are folded in their own time order (`fact_at`, then kind, then digest for ties), which is what in-order delivery
would have produced, whatever order they actually arrived in. Facts are folded even when they predate the
batch's registration: the registration only supplies `essay_count`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

INITIAL_STATUS = "awaiting_content_validation"
OUTCOME_COMPLETED = frozenset({"completed_successfully", "completed_with_failures"})
TERMINAL = frozenset({"completed_successfully", "completed_with_failures", "failed_critically", "cancelled"})
# Within one instant: the pipeline's verdict comes after the phase outcomes it summarises.
_KIND_ORDER = {"assessment": 0, "phase_outcome": 1, "pipeline_completed": 2}


@dataclass(frozen=True, slots=True)
class Fact:
    kind: str
    fact_at: datetime
    digest: str
    body: dict[str, Any]


@dataclass
class BatchState:
    """The derived columns of a `batches` row."""

    status: str = INITIAL_STATUS
    completed_essay_count: int = 0
    failed_essay_count: int = 0
    phase_stats: dict[str, Any] = field(default_factory=dict)
    completed_phases: list[str] | None = None
    error_detail: dict[str, Any] | None = None
    assignment_id: str | None = None
    processing_started_at: datetime | None = None
    processing_completed_at: datetime | None = None
    last_updated: datetime | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "completed_essay_count": self.completed_essay_count,
            "failed_essay_count": self.failed_essay_count,
            "phase_stats": self.phase_stats,
            "completed_phases": self.completed_phases,
            "error_detail": self.error_detail,
            "assignment_id": self.assignment_id,
            "processing_started_at": self.processing_started_at,
            "processing_completed_at": self.processing_completed_at,
            "last_updated": self.last_updated,
        }


def _set_status(state: BatchState, status: str, at: datetime) -> None:
    state.status = status
    if status in TERMINAL:
        state.processing_completed_at = at


def _apply_outcome(state: BatchState, batch_id: str, essay_count: int, fact: Fact) -> None:
    body = fact.body
    phase, status = body["phase"], body["status"]
    completed, failed = int(body["completed_count"]), int(body["failed_count"])
    state.phase_stats[phase] = {
        "status": status,
        "completed_count": completed,
        "failed_count": failed,
        "completed_at": fact.fact_at.isoformat(),
    }
    if status in OUTCOME_COMPLETED:
        state.completed_essay_count = max(state.completed_essay_count, completed)
        state.failed_essay_count = max(state.failed_essay_count, failed)
        if completed + failed >= essay_count:
            overall = (
                "completed_successfully"
                if failed == 0
                else "failed_critically"
                if completed == 0
                else "completed_with_failures"
            )
            _set_status(state, overall, fact.fact_at)
    elif status == "failed_critically":
        _set_status(state, "failed_critically", fact.fact_at)
        state.error_detail = {
            "error_code": "PROCESSING_ERROR",
            "message": f"Phase {phase} failed critically",
            "correlation_id": body.get("correlation_id"),
            "timestamp": fact.fact_at.isoformat(),
            "service": "result_aggregator_service",
            "operation": "process_batch_phase_outcome",
            "details": {"batch_id": batch_id, "phase": phase, "status": status},
            "stack_trace": None,
            "trace_id": None,
            "span_id": None,
        }


def _apply_pipeline(state: BatchState, fact: Fact) -> None:
    body = fact.body
    state.completed_essay_count = int(body["successful_essay_count"])
    state.failed_essay_count = int(body["failed_essay_count"])
    state.completed_phases = list(body["completed_phases"])
    _set_status(state, str(body["final_status"]), fact.fact_at)
    state.processing_completed_at = fact.fact_at


def derive(
    batch_id: str,
    essay_count: int,
    created_at: datetime,
    facts: list[Fact],
    essays_first_at: datetime | None,
    essays_last_at: datetime | None,
) -> BatchState:
    """Fold a batch's facts in time order. `essays_*_at` span the batch's per-essay phase results."""
    state = BatchState()
    ordered = sorted(facts, key=lambda f: (f.fact_at, _KIND_ORDER.get(f.kind, 9), f.digest))
    for fact in ordered:
        if fact.kind == "phase_outcome":
            _apply_outcome(state, batch_id, essay_count, fact)
        elif fact.kind == "pipeline_completed":
            _apply_pipeline(state, fact)
        elif fact.kind == "assessment" and fact.body.get("assignment_id") is not None:
            state.assignment_id = str(fact.body["assignment_id"])
    starts = [t for t in (essays_first_at, *(f.fact_at for f in ordered if f.kind == "phase_outcome")) if t]
    state.processing_started_at = min(starts, default=None)
    stamps = [created_at, *(f.fact_at for f in ordered)]
    if essays_last_at is not None:
        stamps.append(essays_last_at)
    state.last_updated = max(stamps)
    return state
