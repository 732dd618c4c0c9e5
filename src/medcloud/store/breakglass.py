"""Stored break-glass accounts. Creating, opening, closing and reviewing live in `security.breakglass`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.store.db import Database
from medcloud.store.tables import break_glass_accounts

__all__ = ["BreakGlassStore"]


class BreakGlassStore:
    """Rows of the break_glass_accounts table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, name: str, conn: Connection | None = None) -> dict[str, Any] | None:
        q = sa.select(break_glass_accounts).where(break_glass_accounts.c.name == name)
        if conn is not None:
            r = conn.execute(q).first()
        else:
            with self._db.read() as c:
                r = c.execute(q).first()
        return dict(r._mapping) if r else None

    def by_token(self, conn: Connection, token_id: str) -> dict[str, Any] | None:
        r = conn.execute(sa.select(break_glass_accounts).where(break_glass_accounts.c.token_id == token_id)).first()
        return dict(r._mapping) if r else None

    def list_all(self) -> list[dict[str, Any]]:
        with self._db.read() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(sa.select(break_glass_accounts).order_by(break_glass_accounts.c.created_at))
            ]

    def put(self, conn: Connection, row: dict[str, Any]) -> None:
        """Insert an account, or replace a closed (and reviewed) one of the same name."""
        conn.execute(break_glass_accounts.delete().where(break_glass_accounts.c.name == row["name"]))
        conn.execute(break_glass_accounts.insert().values(**row))

    def update(self, conn: Connection, name: str, from_state: str, **values: Any) -> bool:
        """Change an account that is still in `from_state`; False if it is not (someone came first)."""
        res = conn.execute(
            break_glass_accounts.update()
            .where(break_glass_accounts.c.name == name, break_glass_accounts.c.state == from_state)
            .values(**values)
        )
        return bool(res.rowcount)
