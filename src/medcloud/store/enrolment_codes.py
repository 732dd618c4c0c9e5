"""Admin-issued one-time passkey enrolment codes (digests only). Issuing and redeeming live in
`security.enrolment_codes`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.store.db import Database
from medcloud.store.tables import passkey_enrolment_codes as codes

__all__ = ["EnrolmentCodes"]


class EnrolmentCodes:
    """Rows of `passkey_enrolment_codes`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, conn: Connection, row: dict[str, Any]) -> None:
        conn.execute(codes.insert().values(**row))

    def revoke_open(self, conn: Connection, *, person: str | None = None, code_id: str | None = None,
                    by: str, at: datetime) -> int:  # fmt: skip
        """Revoke a person's (or one) codes that are not spent or revoked yet; how many."""
        c = codes.c
        where: list[sa.ColumnElement[bool]] = [c.spent_at.is_(None), c.revoked_at.is_(None)]
        if person is not None:
            where.append(c.person == person)
        if code_id is not None:
            where.append(c.id == code_id)
        res = conn.execute(codes.update().where(*where).values(revoked_at=at, revoked_by=by[:200]))
        return int(res.rowcount)

    def redeem(self, conn: Connection, code_hash: str, person: str, token_id: str, now: datetime) -> str | None:
        """Bind a live code of `person` to the session `token_id`; the code's id, or None if refused.

        One conditional UPDATE: a code that is unknown, another person's, expired, revoked, spent, or
        already redeemed by another session changes nothing. Redeeming again from the same session
        (a ceremony the browser cancelled) is allowed until the code is spent.
        """
        c = codes.c
        res = conn.execute(
            codes.update()
            .where(
                c.code_hash == code_hash,
                c.person == person,
                c.expires_at > now,
                c.spent_at.is_(None),
                c.revoked_at.is_(None),
                sa.or_(c.redeemed_token_id.is_(None), c.redeemed_token_id == token_id),
            )
            .values(redeemed_token_id=token_id, redeemed_at=now)
        )
        if not res.rowcount:
            return None
        row = conn.execute(sa.select(c.id).where(c.code_hash == code_hash)).first()
        return str(row.id) if row else None

    def grant(self, token_id: str, person: str, now: datetime) -> dict[str, Any] | None:
        """The live code this session redeemed for `person` (not spent, revoked or expired), if any."""
        c = codes.c
        with self._db.read() as conn:
            r = conn.execute(
                sa.select(codes).where(
                    c.redeemed_token_id == token_id,
                    c.person == person,
                    c.expires_at > now,
                    c.spent_at.is_(None),
                    c.revoked_at.is_(None),
                )
            ).first()
        return dict(r._mapping) if r else None

    def spend(self, conn: Connection, token_id: str, person: str, credential_id: str, now: datetime) -> str | None:
        """Mark this session's redeemed live code spent by a new passkey; the code's id, or None."""
        c = codes.c
        live = [c.redeemed_token_id == token_id, c.person == person, c.expires_at > now,
                c.spent_at.is_(None), c.revoked_at.is_(None)]  # fmt: skip
        row = conn.execute(sa.select(c.id).where(*live)).first()
        if row is None:
            return None
        res = conn.execute(
            codes.update().where(c.id == row.id, *live).values(spent_at=now, credential_id=credential_id)
        )
        return str(row.id) if res.rowcount else None

    def list_all(self, person: str | None = None) -> list[dict[str, Any]]:
        """Every code (newest first), without digests."""
        cols = [col for col in codes.c if col.name != "code_hash"]
        q = sa.select(*cols).order_by(codes.c.created_at.desc())
        if person is not None:
            q = q.where(codes.c.person == person)
        with self._db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]
