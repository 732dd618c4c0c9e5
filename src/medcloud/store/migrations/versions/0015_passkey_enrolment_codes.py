"""Admin-issued one-time passkey enrolment codes (lost passkey, new device): stored as SHA-256 digests;
and the audit log's signing keys across rotations (public keys and the rotation statements).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "passkey_enrolment_codes",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("person", sa.String(256), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("redeemed_at", TS, nullable=True),
        sa.Column("redeemed_token_id", sa.String(32), nullable=True),
        sa.Column("spent_at", TS, nullable=True),
        sa.Column("credential_id", sa.String(1400), nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_passkey_enrolment_codes_person", "passkey_enrolment_codes", ["person"])
    op.create_index("ix_passkey_enrolment_codes_redeemed_token_id", "passkey_enrolment_codes", ["redeemed_token_id"])
    op.create_table(
        "audit_log_keys",
        sa.Column("log_id", sa.String(64), primary_key=True),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("retired_at", TS, nullable=True),
        sa.Column("rotation", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("audit_log_keys")
    op.drop_index("ix_passkey_enrolment_codes_redeemed_token_id", table_name="passkey_enrolment_codes")
    op.drop_index("ix_passkey_enrolment_codes_person", table_name="passkey_enrolment_codes")
    op.drop_table("passkey_enrolment_codes")
