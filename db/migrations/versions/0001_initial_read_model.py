"""initial read model

Revision ID: 0001
Revises:
Create Date: 2026-11-28 21:36:38.092685
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_facts",
        sa.Column("batch_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("fact_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "kind", "digest", name=op.f("pk_batch_facts")),
    )
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("course_code", sa.Text(), nullable=True),
        sa.Column("class_id", sa.Text(), nullable=True),
        sa.Column("org_id", sa.Text(), nullable=True),
        sa.Column("essay_count", sa.Integer(), nullable=False),
        sa.Column("essay_ids", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("requested_pipelines", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("student_prompt_ref", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("registration_digest", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("completed_essay_count", sa.Integer(), nullable=False),
        sa.Column("failed_essay_count", sa.Integer(), nullable=False),
        sa.Column("phase_stats", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("completed_phases", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error_detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("assignment_id", sa.Text(), nullable=True),
        sa.Column("processing_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processing_completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_batches")),
    )
    op.create_index(
        op.f("ix_batches_user_id_created_at_batch_id"), "batches", ["user_id", "created_at", "batch_id"], unique=False
    )
    op.create_table(
        "consumer_positions",
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("high_watermark", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name=op.f("pk_consumer_positions")),
    )
    op.create_table(
        "essays",
        sa.Column("essay_id", sa.Text(), nullable=False),
        sa.Column("batch_id", sa.Text(), nullable=True),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("file_upload_id", sa.Text(), nullable=True),
        sa.Column("original_text_storage_id", sa.Text(), nullable=True),
        sa.Column("slot_fact_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("slot_digest", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("essay_id", name=op.f("pk_essays")),
    )
    op.create_index(op.f("ix_essays_batch_id_essay_id"), "essays", ["batch_id", "essay_id"], unique=False)
    op.create_table(
        "phase_results",
        sa.Column("essay_id", sa.Text(), nullable=False),
        sa.Column("phase", sa.Text(), nullable=False),
        sa.Column("batch_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("source_status", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fact_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("error_detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("correction_count", sa.Integer(), nullable=True),
        sa.Column("corrected_text_storage_id", sa.Text(), nullable=True),
        sa.Column("total_corrections", sa.Integer(), nullable=True),
        sa.Column("l2_dictionary_corrections", sa.Integer(), nullable=True),
        sa.Column("spellchecker_corrections", sa.Integer(), nullable=True),
        sa.Column("word_count", sa.Integer(), nullable=True),
        sa.Column("correction_density", sa.Double(), nullable=True),
        sa.Column("processing_duration_ms", sa.Integer(), nullable=True),
        sa.Column("processor_version", sa.Text(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("normalized_score", sa.Double(), nullable=True),
        sa.Column("letter_grade", sa.Text(), nullable=True),
        sa.Column("confidence_score", sa.Double(), nullable=True),
        sa.Column("confidence_label", sa.Text(), nullable=True),
        sa.Column("comparison_count", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("essay_id", "phase", name=op.f("pk_phase_results")),
    )
    op.create_index(op.f("ix_phase_results_batch_id_phase"), "phase_results", ["batch_id", "phase"], unique=False)
    op.create_table(
        "quarantine",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    op.create_index(
        op.f("ix_quarantine_topic_partition_offset"), "quarantine", ["topic", "partition", "offset"], unique=True
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_quarantine_topic_partition_offset"), table_name="quarantine")
    op.drop_table("quarantine")
    op.drop_index(op.f("ix_phase_results_batch_id_phase"), table_name="phase_results")
    op.drop_table("phase_results")
    op.drop_index(op.f("ix_essays_batch_id_essay_id"), table_name="essays")
    op.drop_table("essays")
    op.drop_table("consumer_positions")
    op.drop_index(op.f("ix_batches_user_id_created_at_batch_id"), table_name="batches")
    op.drop_table("batches")
    op.drop_table("batch_facts")
