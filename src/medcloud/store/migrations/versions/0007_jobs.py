"""Jobs on dataset versions, their artefacts, and the scope column of narrowly scoped (job) tokens.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("scope", sa.String(200), nullable=True))
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False, server_default=""),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("projects", sa.String(1024), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("entrypoint", sa.String(255), nullable=False),
        sa.Column("args", sa.Text, nullable=False, server_default="[]"),
        sa.Column("code_sha256", sa.String(64), nullable=False),
        sa.Column("code_bytes", sa.BigInteger, nullable=False),
        sa.Column("num_cpus", sa.Float, nullable=False, server_default="1"),
        sa.Column("num_gpus", sa.Float, nullable=False, server_default="0"),
        sa.Column("timeout_s", sa.Integer, nullable=False),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("token_id", sa.String(32), nullable=True),
        sa.Column("external_id", sa.String(100), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("message", sa.String(1000), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    for column in ("dataset_id", "state", "created_at"):
        op.create_index(f"ix_jobs_{column}", "jobs", [column])
    op.create_table(
        "job_artifacts",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "name", name="pk_job_artifacts"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_artifacts_job_id_jobs"),
    )
    op.create_index("ix_job_artifacts_sha256", "job_artifacts", ["sha256"])


def downgrade() -> None:
    op.drop_table("job_artifacts")
    op.drop_table("jobs")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("scope")
