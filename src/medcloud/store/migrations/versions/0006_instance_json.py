"""DICOM JSON of each stored DICOM file, converted at ingest (WADO-RS metadata served from it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Files stored before this revision get their row on their first metadata read (lazy backfill).
    op.create_table(
        "instance_json",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_instance_json"),
    )


def downgrade() -> None:
    op.drop_table("instance_json")
