"""app/reads/status.py: the EVENTS.md §8 client status mapping and current_phase rule, shared with the REST shim."""

from __future__ import annotations

import pytest

from app.reads.status import BATCH_STATUSES, CLIENT_STATUSES, client_status, current_phase, internal_statuses
from db.rows import PhaseProgress

# EVENTS.md §8, gen 2 column, row by row.
SECTION_8 = {
    "awaiting_content_validation": "pending_content",
    "content_ingestion_failed": "failed",
    "awaiting_pipeline_configuration": "pending_content",
    "ready_for_pipeline_execution": "ready",
    "processing_pipelines": "processing",
    "awaiting_student_validation": "processing",
    "validation_timeout_processed": "processing",
    "guest_class_ready": "processing",
    "completed_successfully": "completed_successfully",
    "completed_with_failures": "completed_with_failures",
    "failed_critically": "failed",
    "cancelled": "cancelled",
    "student_validation_completed": "processing",
    "something_new": "processing",
}


@pytest.mark.parametrize(("internal", "client"), SECTION_8.items())
def test_client_status(internal: str, client: str) -> None:
    assert client_status(internal) == client


def test_every_status_maps_to_a_client_status() -> None:
    assert {client_status(s) for s in BATCH_STATUSES} == set(CLIENT_STATUSES)


def test_internal_statuses_invert_the_mapping() -> None:
    failed = internal_statuses(["failed"])
    assert failed.values == {"content_ingestion_failed", "failed_critically"}
    assert not failed.unknown
    processing = internal_statuses(["processing"])
    assert processing.unknown  # the fallback: statuses this service does not know
    assert "something_new" not in processing.known


@pytest.mark.parametrize(
    ("status", "progress", "phase"),
    [
        ("processing_pipelines", PhaseProgress(3, 1, 3), "spellcheck"),
        ("processing_pipelines", PhaseProgress(3, 0, 2), "cj_assessment"),
        ("processing_pipelines", PhaseProgress(3, 0, 0), None),
        ("processing_pipelines", PhaseProgress(0, 0, 0), None),  # no essays: BOS fallback, never consumed
        ("processing_pipelines", None, None),
        ("completed_successfully", PhaseProgress(3, 3, 3), None),
        ("awaiting_student_validation", PhaseProgress(3, 3, 3), None),
    ],
)
def test_current_phase(status: str, progress: PhaseProgress | None, phase: str | None) -> None:
    assert current_phase(status, progress) == phase
