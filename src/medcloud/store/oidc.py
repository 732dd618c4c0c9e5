"""Rows of sign-in through the hospital's identity provider: logins in progress and people's sessions.

What the rows mean, and every check on them, live in `security.oidc` and `hub.routes.auth`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.store.db import Database, utcnow
from medcloud.store.tables import oidc_logins, oidc_sessions

__all__ = ["OidcStore"]


class OidcStore:
    """Logins in progress (`oidc_logins`) and the sessions they made (`oidc_sessions`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_login(self, conn: Connection, row: dict[str, Any]) -> None:
        """Store a login in progress, dropping those whose time ran out."""
        conn.execute(oidc_logins.delete().where(oidc_logins.c.expires_at <= utcnow()))
        conn.execute(oidc_logins.insert().values(**row))

    def take_login(self, conn: Connection, state_sha256: str) -> dict[str, Any] | None:
        """The login with this state, deleted as it is read (a state is good once); None if unknown or late."""
        r = conn.execute(sa.select(oidc_logins).where(oidc_logins.c.state_sha256 == state_sha256)).first()
        if r is None:
            return None
        res = conn.execute(oidc_logins.delete().where(oidc_logins.c.state_sha256 == state_sha256))
        row = dict(r._mapping)
        if not res.rowcount or _aware(row["expires_at"]) <= utcnow():
            return None
        return row

    def add_session(self, conn: Connection, row: dict[str, Any]) -> None:
        conn.execute(oidc_sessions.insert().values(**row))

    def redeem(self, conn: Connection, handoff_sha256: str) -> dict[str, Any] | None:
        """The session waiting for this hand-over code, which is then spent; None if unknown, spent or late."""
        r = conn.execute(
            sa.select(oidc_sessions).where(
                oidc_sessions.c.handoff_sha256 == handoff_sha256, oidc_sessions.c.token_id.is_(None)
            )
        ).first()
        if r is None:
            return None
        res = conn.execute(
            oidc_sessions.update()
            .where(oidc_sessions.c.id == r.id, oidc_sessions.c.handoff_sha256 == handoff_sha256)
            .values(handoff_sha256=None)
        )
        row = dict(r._mapping)
        if not res.rowcount or _aware(row["handoff_expires_at"]) <= utcnow():
            return None
        return row

    def attach_token(self, conn: Connection, session_id: str, token_id: str) -> None:
        conn.execute(oidc_sessions.update().where(oidc_sessions.c.id == session_id).values(token_id=token_id))

    def by_token(self, token_id: str) -> dict[str, Any] | None:
        with self._db.read() as conn:
            r = conn.execute(sa.select(oidc_sessions).where(oidc_sessions.c.token_id == token_id)).first()
        return dict(r._mapping) if r else None

    def refreshed(
        self,
        conn: Connection,
        session_id: str,
        *,
        grant_box: bytes,
        role: str,
        projects: str,
        token_expires_at: datetime,
    ) -> None:
        conn.execute(
            oidc_sessions.update()
            .where(oidc_sessions.c.id == session_id)
            .values(
                grant_box=grant_box,
                role=role,
                projects=projects,
                token_expires_at=token_expires_at,
                refreshed_at=utcnow(),
            )
        )

    def end(self, conn: Connection, session_id: str) -> None:
        """The session is over: the provider's tokens are forgotten."""
        conn.execute(
            oidc_sessions.update()
            .where(oidc_sessions.c.id == session_id)
            .values(grant_box=None, handoff_sha256=None, ended_at=utcnow())
        )


def _aware(dt: datetime) -> datetime:  # SQLite returns naive datetimes
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt
