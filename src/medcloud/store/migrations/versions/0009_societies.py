"""Societies (the organisations sites contribute through) with their collection targets; `sites.society`.

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "societies",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("display_name_ja", sa.String(200), nullable=False, server_default=""),
        sa.Column("target_cases", sa.Integer, nullable=True),
        sa.Column("target_images", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_societies"),
    )
    # A plain column (no foreign key): SQLite cannot add one without rebuilding the table; the store checks it.
    op.add_column("sites", sa.Column("society", sa.String(64), nullable=True))
    op.create_index("ix_sites_society", "sites", ["society"])


def downgrade() -> None:
    op.drop_index("ix_sites_society", table_name="sites")
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("society")
    op.drop_table("societies")
