"""People's sessions beside machine tokens: kind, the person behind a session, last use, second factor.

Machine tokens (sites, gateways, FL parties, jobs, CLI-issued admin tokens) keep kind 'machine'. A
person signed in through the hospital's identity provider gets a short-lived token of kind 'session'
whose `person` is the identity provider's stable subject; `last_used_at` drives the idle timeout and
`mfa_at` records when the session passed its second factor (WebAuthn).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="machine"))
        batch.add_column(sa.Column("person", sa.String(256), nullable=True))
        batch.add_column(sa.Column("last_used_at", TS, nullable=True))
        batch.add_column(sa.Column("mfa_at", TS, nullable=True))
    op.create_index("ix_tokens_person", "tokens", ["person"])


def downgrade() -> None:
    op.drop_index("ix_tokens_person", table_name="tokens")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("mfa_at")
        batch.drop_column("last_used_at")
        batch.drop_column("person")
        batch.drop_column("kind")
