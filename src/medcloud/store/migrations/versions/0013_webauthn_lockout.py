"""Passkeys (WebAuthn credentials and their pending challenges) and lockout after repeated failures.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webauthn_credentials",
        sa.Column("id", sa.String(1400), primary_key=True),
        sa.Column("person", sa.String(256), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sign_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("transports", sa.String(200), nullable=False, server_default=""),
        sa.Column("aaguid", sa.String(36), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
    )
    op.create_index("ix_webauthn_credentials_person", "webauthn_credentials", ["person"])
    op.create_table(
        "webauthn_challenges",
        sa.Column("challenge", sa.String(128), primary_key=True),
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_webauthn_challenges_token_id", "webauthn_challenges", ["token_id"])
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_auth_failures_key_at", "auth_failures", ["key", "at"])
    op.create_table(
        "auth_lockouts",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("locked_until", TS, nullable=False),
    )
    op.create_index("ix_auth_lockouts_locked_until", "auth_lockouts", ["locked_until"])


def downgrade() -> None:
    op.drop_index("ix_auth_lockouts_locked_until", table_name="auth_lockouts")
    op.drop_table("auth_lockouts")
    op.drop_index("ix_auth_failures_key_at", table_name="auth_failures")
    op.drop_table("auth_failures")
    op.drop_index("ix_webauthn_challenges_token_id", table_name="webauthn_challenges")
    op.drop_table("webauthn_challenges")
    op.drop_index("ix_webauthn_credentials_person", table_name="webauthn_credentials")
    op.drop_table("webauthn_credentials")
