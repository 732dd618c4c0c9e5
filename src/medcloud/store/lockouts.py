"""Failed authentications and the locks they cause. The policy (what counts, which key) is `security.lockout`."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.store.db import Database
from medcloud.store.tables import auth_failures, auth_lockouts

__all__ = ["Lockouts"]


class Lockouts:
    """Rows of `auth_failures` and `auth_lockouts`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def fail(self, conn: Connection, key: str, at: datetime, since: datetime) -> int:
        """Record one failure of `key`; the failures of `key` since `since`, this one included.

        Failures older than `since` are forgotten on the way.
        """
        conn.execute(auth_failures.delete().where(auth_failures.c.key == key, auth_failures.c.at < since))
        conn.execute(auth_failures.insert().values(key=key, at=at))
        count = conn.execute(
            sa.select(sa.func.count()).select_from(auth_failures).where(auth_failures.c.key == key)
        ).scalar_one()
        return int(count)

    def lock(self, conn: Connection, key: str, until: datetime) -> None:
        """Lock `key` until `until`; its counted failures start again from zero."""
        conn.execute(auth_failures.delete().where(auth_failures.c.key == key))
        conn.execute(auth_lockouts.delete().where(auth_lockouts.c.key == key))
        conn.execute(auth_lockouts.insert().values(key=key, locked_until=until))

    def active(self, now: datetime) -> dict[str, datetime]:
        """Every key locked at `now`, with the end of its lock."""
        with self._db.read() as conn:
            rows = conn.execute(sa.select(auth_lockouts).where(auth_lockouts.c.locked_until > now))
            return {r.key: r.locked_until for r in rows}

    def unlock(self, conn: Connection, key: str) -> bool:
        res = conn.execute(auth_lockouts.delete().where(auth_lockouts.c.key == key))
        conn.execute(auth_failures.delete().where(auth_failures.c.key == key))
        return bool(res.rowcount)
