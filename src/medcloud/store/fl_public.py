"""The SQL behind the relayed federated-learning public folder (`medcloud.federated.relay` says who may
write which name; the hub's route enforces it inside the write transaction)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.errors import Conflict
from medcloud.store.db import Database, utcnow
from medcloud.store.tables import fl_public_files

__all__ = ["FLPublicFiles"]


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _out(r: Any) -> dict[str, Any]:
    return {
        "name": r.name,
        "version": int(r.version),
        "sha256": r.sha256,
        "size": int(r.size),
        "uploaded_by": r.uploaded_by,
        "uploaded_at": _iso(r.uploaded_at),
    }


class FLPublicFiles:
    def __init__(self, db: Database) -> None:
        self._db = db

    def latest(self, federation: str) -> list[dict[str, Any]]:
        """The newest version of every file of a federation, by name."""
        t = fl_public_files
        newest = (
            sa.select(t.c.name, sa.func.max(t.c.version).label("version"))
            .where(t.c.federation == federation)
            .group_by(t.c.name)
            .subquery()
        )
        q = (
            sa.select(t)
            .join(newest, sa.and_(t.c.name == newest.c.name, t.c.version == newest.c.version))
            .where(t.c.federation == federation)
            .order_by(t.c.name)
        )
        with self._db.read() as conn:
            return [_out(r) for r in conn.execute(q)]

    def get(self, federation: str, name: str, version: int | None = None) -> dict[str, Any] | None:
        t = fl_public_files
        q = sa.select(t).where(t.c.federation == federation, t.c.name == name)
        q = q.where(t.c.version == version) if version is not None else q.order_by(t.c.version.desc()).limit(1)
        with self._db.read() as conn:
            row = conn.execute(q).first()
        return _out(row) if row is not None else None

    def history(self, federation: str, name: str) -> list[dict[str, Any]]:
        t = fl_public_files
        q = sa.select(t).where(t.c.federation == federation, t.c.name == name).order_by(t.c.version)
        with self._db.read() as conn:
            return [_out(r) for r in conn.execute(q)]

    def put(
        self,
        conn: Connection,
        federation: str,
        name: str,
        sha256: str,
        size: int,
        uploaded_by: str,
        *,
        may_replace: bool,
    ) -> tuple[dict[str, Any], bool]:
        """Record a new version (or nothing, when the newest already has these bytes): (row, created).

        A name already written by someone else is refused (409) unless `may_replace` (its author is fixed by
        its name and `uploaded_by` is that author)."""
        t = fl_public_files
        cur = conn.execute(
            sa.select(t).where(t.c.federation == federation, t.c.name == name).order_by(t.c.version.desc()).limit(1)
        ).first()
        if cur is not None:
            if cur.sha256 == sha256 and cur.uploaded_by == uploaded_by:
                return _out(cur), False
            if cur.uploaded_by != uploaded_by and not may_replace:
                raise Conflict(f"{name} was published by {cur.uploaded_by}; only it may publish a new version")
        now = utcnow()
        row: dict[str, Any] = {
            "federation": federation,
            "name": name,
            "version": (int(cur.version) + 1) if cur is not None else 1,
            "sha256": sha256,
            "size": size,
            "uploaded_by": uploaded_by,
            "uploaded_at": now,
        }
        conn.execute(sa.insert(t).values(**row))
        return {k: v for k, v in row.items() if k != "federation"} | {"uploaded_at": _iso(now)}, True
