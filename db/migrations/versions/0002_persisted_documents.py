"""persisted documents

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 15:00:00

Persisted GraphQL documents by SHA-256 (db/documents.py): Apollo APQ registrations and the trusted documents of
`ras documents add`. Not a projection table: `ras rebuild` never swaps it (db/shadow.py lists the ones it does).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "persisted_documents",
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_persisted_documents")),
        sa.CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name=op.f("ck_persisted_documents_sha256_hex")),
    )


def downgrade() -> None:
    op.drop_table("persisted_documents")
