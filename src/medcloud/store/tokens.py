"""Stored API tokens: only a hash of each secret is kept. Issuing and checking live in `security.tokens`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.store.db import Database, utcnow
from medcloud.store.tables import tokens

__all__ = ["TokenStore"]


class TokenStore:
    """Rows of the tokens table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def insert(self, conn: Connection, row: dict[str, Any]) -> None:
        """Store one token row in the caller's write transaction."""
        conn.execute(tokens.insert().values(**row))

    def get(self, token_id: str) -> dict[str, Any] | None:
        """The token row (secret hash included), or None."""
        with self._db.read() as conn:
            r = conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).first()
        return dict(r._mapping) if r else None

    def list_all(self) -> list[dict[str, Any]]:
        """Every token, oldest first, without secret hashes."""
        with self._db.read() as conn:
            return [
                {k: v for k, v in r._mapping.items() if k != "secret_sha256"}
                for r in conn.execute(sa.select(tokens).order_by(tokens.c.created_at))
            ]

    def secret_digests(self) -> list[str]:
        """Every stored secret digest (the self-check looks that each is a SHA-256 digest, never a secret)."""
        with self._db.read() as conn:
            return [str(r[0]) for r in conn.execute(sa.select(tokens.c.secret_sha256))]

    def set_expiry(self, conn: Connection, token_id: str, expires_at: Any) -> bool:
        """Move an unrevoked token's expiry (a break-glass account opening); False if unknown or revoked."""
        res = conn.execute(
            tokens.update().where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None)).values(expires_at=expires_at)
        )
        return bool(res.rowcount)

    def get_in(self, conn: Connection, token_id: str) -> dict[str, Any] | None:
        """The token row read in the caller's transaction."""
        r = conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).first()
        return dict(r._mapping) if r else None

    def revoke(self, conn: Connection, token_id: str) -> bool:
        """Mark a token revoked; False if it was unknown or already revoked."""
        res = conn.execute(
            tokens.update().where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
        return bool(res.rowcount)

    def refresh_session(self, conn: Connection, token_id: str, expires_at: Any, *, role: str, projects: str) -> None:
        """A refreshed session: its new end, and the grants the identity provider's groups give now."""
        conn.execute(
            tokens.update()
            .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
            .values(expires_at=expires_at, role=role, projects=projects)
        )

    def touch(self, token_id: str, when: Any) -> None:
        """Record a session's last use (the idle timeout counts from it); its own short write."""
        with self._db.write() as conn:
            conn.execute(tokens.update().where(tokens.c.id == token_id).values(last_used_at=when))

    def set_mfa(self, conn: Connection, token_id: str, at: datetime) -> bool:
        """Record that a live session passed its second factor at `at`; False if it is gone or revoked."""
        res = conn.execute(
            tokens.update()
            .where(tokens.c.id == token_id, tokens.c.kind == "session", tokens.c.revoked_at.is_(None))
            .values(mfa_at=at)
        )
        return bool(res.rowcount)
