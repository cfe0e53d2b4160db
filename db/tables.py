"""The read model's tables.

Two kinds of rows live here. *Facts* are what events said, each with the time the producer stamped on it
(`fact_at`) and a digest of the payload that identifies it across outbox re-sends: `batch_facts`, `essays` (slot
facts) and `phase_results`. *Derived* columns of `batches` (status, counts, phase stats, timestamps) are recomputed
from the stored facts whenever they change, so the final rows do not depend on the order events arrived in.

Essays and phase results carry no foreign key to `batches`: their events can arrive before the batch is registered,
and they link up by `batch_id` once it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Double, Index, Integer, LargeBinary, MetaData, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = dict[str, Any]
Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Batch(Base):
    """One registered batch: registration facts plus aggregates derived from `batch_facts`."""

    __tablename__ = "batches"

    batch_id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    course_code: Mapped[str | None] = mapped_column(Text)
    class_id: Mapped[str | None] = mapped_column(Text)
    org_id: Mapped[str | None] = mapped_column(Text)
    essay_count: Mapped[int] = mapped_column(Integer)
    essay_ids: Mapped[list[str]] = mapped_column(JSONB)
    requested_pipelines: Mapped[list[str] | None] = mapped_column(JSONB)
    student_prompt_ref: Mapped[Json | None] = mapped_column(JSONB)
    registration_digest: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)

    # Derived from facts by consumer.pure.batch_state; never written by an event directly.
    status: Mapped[str] = mapped_column(Text)
    completed_essay_count: Mapped[int] = mapped_column(Integer)
    failed_essay_count: Mapped[int] = mapped_column(Integer)
    phase_stats: Mapped[Json] = mapped_column(JSONB)
    completed_phases: Mapped[list[str] | None] = mapped_column(JSONB)
    error_detail: Mapped[Json | None] = mapped_column(JSONB)
    assignment_id: Mapped[str | None] = mapped_column(Text)
    processing_started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    processing_completed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_updated: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index(None, "user_id", "created_at", "batch_id"),)


class BatchFact(Base):
    """A batch-level fact: a phase outcome, a pipeline completion or an assessment's batch fields.

    Keyed by payload digest, so a re-sent event (new event_id, same data) is the same row; `fact_at` keeps the
    earliest stamp seen.
    """

    __tablename__ = "batch_facts"

    batch_id: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    digest: Mapped[str] = mapped_column(Text, primary_key=True)
    fact_at: Mapped[datetime] = mapped_column(Timestamp)
    body: Mapped[Json] = mapped_column(JSONB)


class Essay(Base):
    """An essay slot. Rows appear with the first event naming the essay; slot fields come from slot assignment."""

    __tablename__ = "essays"

    essay_id: Mapped[str] = mapped_column(Text, primary_key=True)
    batch_id: Mapped[str | None] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(Text)
    file_upload_id: Mapped[str | None] = mapped_column(Text)
    original_text_storage_id: Mapped[str | None] = mapped_column(Text)
    slot_fact_at: Mapped[datetime | None] = mapped_column(Timestamp)
    slot_digest: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index(None, "batch_id", "essay_id"),)


class PhaseResult(Base):
    """The newest result of one processing phase for one essay.

    Typed columns cover spellcheck and CJ assessment; a future phase adds rows (and, if it needs them, columns
    here), never columns on `essays`. `details` keeps phase fields that have no typed column.
    """

    __tablename__ = "phase_results"

    essay_id: Mapped[str] = mapped_column(Text, primary_key=True)
    phase: Mapped[str] = mapped_column(Text, primary_key=True)
    batch_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    source_status: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    fact_at: Mapped[datetime] = mapped_column(Timestamp)
    digest: Mapped[str] = mapped_column(Text)
    error_detail: Mapped[Json | None] = mapped_column(JSONB)
    details: Mapped[Json | None] = mapped_column(JSONB)

    # spellcheck
    correction_count: Mapped[int | None] = mapped_column(Integer)
    corrected_text_storage_id: Mapped[str | None] = mapped_column(Text)
    total_corrections: Mapped[int | None] = mapped_column(Integer)
    l2_dictionary_corrections: Mapped[int | None] = mapped_column(Integer)
    spellchecker_corrections: Mapped[int | None] = mapped_column(Integer)
    word_count: Mapped[int | None] = mapped_column(Integer)
    correction_density: Mapped[float | None] = mapped_column(Double)
    processing_duration_ms: Mapped[int | None] = mapped_column(Integer)
    processor_version: Mapped[str | None] = mapped_column(Text)

    # cj_assessment
    rank: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Double)
    normalized_score: Mapped[float | None] = mapped_column(Double)
    letter_grade: Mapped[str | None] = mapped_column(Text)
    confidence_score: Mapped[float | None] = mapped_column(Double)
    confidence_label: Mapped[str | None] = mapped_column(Text)
    comparison_count: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index(None, "batch_id", "phase"),)


class ConsumerPosition(Base):
    """Next offset to read per partition, written in the same transaction as the rows it produced."""

    __tablename__ = "consumer_positions"

    topic: Mapped[str] = mapped_column(Text, primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    last_event_at: Mapped[datetime | None] = mapped_column(Timestamp)
    high_watermark: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class QuarantinedMessage(Base):
    """A record that could not be parsed or validated, kept byte for byte with the reason."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(Text)
    quarantined_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    replayed_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (Index(None, "topic", "partition", "offset", unique=True),)
