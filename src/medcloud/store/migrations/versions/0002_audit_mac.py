"""Audit events carry an HMAC of their hash, keyed outside the database (NULL for events before the key).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: it rewrites no row, so the append-only triggers stay and existing events keep
    # their hashes (the chain rule does not cover the MAC).
    op.add_column("audit_events", sa.Column("mac", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("mac")
