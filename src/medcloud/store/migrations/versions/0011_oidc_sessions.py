"""Sign-in through the hospital's identity provider: logins in progress and the sessions they made.

`oidc_logins` holds one row per sign-in started (found by the SHA-256 of its `state`, deleted when the
callback uses it, so a state is good once). `oidc_sessions` holds what the provider granted to one
person's sign-in: found first by the SHA-256 of the one-time hand-over code the page redeems, then by
the session token it became; the provider's refresh and ID tokens are kept only encrypted (`grant_box`).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oidc_logins",
        sa.Column("state_sha256", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("code_verifier", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("return_to", sa.String(200), nullable=False, server_default="/"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False, index=True),
    )
    op.create_table(
        "oidc_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("handoff_sha256", sa.String(64), nullable=True, unique=True),
        sa.Column("handoff_expires_at", TS, nullable=True),
        sa.Column("token_id", sa.String(32), nullable=True, unique=True),
        sa.Column("person", sa.String(256), nullable=False, index=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("projects", sa.String(1024), nullable=False, server_default=""),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("grant_box", sa.LargeBinary, nullable=True),
        sa.Column("token_expires_at", TS, nullable=False),
        sa.Column("signed_in_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=False),
        sa.Column("refreshed_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("oidc_sessions")
    op.drop_table("oidc_logins")
