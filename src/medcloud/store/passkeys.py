"""People's WebAuthn credentials and the ceremony challenges outstanding. Ceremonies live in `security.passkeys`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.store.db import Database, utcnow
from medcloud.store.tables import webauthn_challenges, webauthn_credentials

__all__ = ["Passkeys"]


class Passkeys:
    """Rows of `webauthn_credentials` and `webauthn_challenges`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def for_person(self, person: str) -> list[dict[str, Any]]:
        """A person's credentials, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(webauthn_credentials)
                .where(webauthn_credentials.c.person == person)
                .order_by(webauthn_credentials.c.created_at)
            )
            return [dict(r._mapping) for r in rows]

    def get(self, credential_id: str) -> dict[str, Any] | None:
        with self._db.read() as conn:
            r = conn.execute(sa.select(webauthn_credentials).where(webauthn_credentials.c.id == credential_id)).first()
        return dict(r._mapping) if r else None

    def add(self, conn: Connection, row: dict[str, Any]) -> bool:
        """Store a new credential; False if its id is already registered (to anyone)."""
        exists = conn.execute(
            sa.select(webauthn_credentials.c.id).where(webauthn_credentials.c.id == row["id"])
        ).first()
        if exists:
            return False
        conn.execute(webauthn_credentials.insert().values(**row))
        return True

    def use(self, conn: Connection, credential_id: str, sign_count: int, at: datetime) -> bool:
        """Record a use with its new sign count; False if the stored count is not below it (a clone).

        Authenticators that keep no counter report 0 for ever: 0 after 0 is accepted.
        """
        c = webauthn_credentials.c
        grows = c.sign_count == 0 if sign_count == 0 else c.sign_count < sign_count
        res = conn.execute(
            webauthn_credentials.update()
            .where(c.id == credential_id, grows)
            .values(sign_count=sign_count, last_used_at=at)
        )
        return bool(res.rowcount)

    def delete_for_person(self, conn: Connection, person: str) -> int:
        res = conn.execute(webauthn_credentials.delete().where(webauthn_credentials.c.person == person))
        return int(res.rowcount)

    def put_challenge(
        self, conn: Connection, challenge: str, token_id: str, purpose: str, expires_at: datetime
    ) -> None:
        """Store a challenge; it replaces the session's earlier one for the same ceremony, and stale ones go."""
        c = webauthn_challenges.c
        conn.execute(
            webauthn_challenges.delete().where(
                sa.or_(c.expires_at <= utcnow(), sa.and_(c.token_id == token_id, c.purpose == purpose))
            )
        )
        conn.execute(
            webauthn_challenges.insert().values(
                challenge=challenge, token_id=token_id, purpose=purpose, expires_at=expires_at
            )
        )

    def take_challenge(self, conn: Connection, challenge: str, token_id: str, purpose: str) -> bool:
        """Consume a live challenge this session asked for: True once, then never again."""
        c = webauthn_challenges.c
        res = conn.execute(
            webauthn_challenges.delete().where(
                c.challenge == challenge, c.token_id == token_id, c.purpose == purpose, c.expires_at > utcnow()
            )
        )
        return bool(res.rowcount)
