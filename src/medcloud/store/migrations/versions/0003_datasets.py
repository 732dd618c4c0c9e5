"""Cohorts (saved queries) and frozen dataset versions with their files.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cohorts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("projects", sa.String(1024), nullable=False),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("projects", "name", name="uq_cohorts_projects_name"),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, index=True),
        sa.Column("projects", sa.String(1024), nullable=False),
        sa.Column("header", sa.Text, nullable=False),
        sa.Column("file_count", sa.Integer, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("catalog_state", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("withdrawn_at", TS, nullable=True),
        sa.Column("withdrawn_reason", sa.String(1000), nullable=True),
    )
    op.create_table(
        "dataset_files",
        sa.Column("version_id", sa.String(64), sa.ForeignKey("dataset_versions.id"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sop_uid", sa.String(64), nullable=False, index=True),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dataset_files")
    op.drop_table("dataset_versions")
    op.drop_table("cohorts")
