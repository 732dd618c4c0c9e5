"""Where the audit chain is stored: appending events inside write transactions, paging, verifying.

The chain rule, the key and the check live in `medcloud.security.audit`; this module holds the SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.security.audit import GENESIS, AuditSeal, ChainReport, canonical_detail, chain_hash, verify_chain
from medcloud.store.db import Database, utcnow
from medcloud.store.queries import MAX_PAGE
from medcloud.store.tables import audit_events

__all__ = ["AuditChain", "AuditLog"]


class AuditChain:
    """Appends events to the hash chain inside one write transaction (which serializes writers)."""

    def __init__(self, conn: Connection, seal: AuditSeal | None = None) -> None:
        self._conn = conn
        self._seal = seal
        head = conn.execute(
            sa.select(audit_events.c.seq, audit_events.c.hash).order_by(audit_events.c.seq.desc()).limit(1)
        ).first()
        self._seq, self._prev = (int(head.seq), str(head.hash)) if head else (0, GENESIS)

    def append(
        self,
        *,
        subject: str,
        action: str,
        resource: str,
        outcome: str,
        client: str = "",
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one event; returns the stored row."""
        row = self._link(
            {"subject": subject, "action": action, "resource": resource, "outcome": outcome,
             "client": client, "detail": detail}
        )  # fmt: skip
        self._conn.execute(audit_events.insert().values(**row))
        self._seal_after_commit(row)
        return row

    def append_many(self, events: Sequence[dict[str, Any]]) -> None:
        """Append events in order with one multi-row insert (each still chained to the one before)."""
        rows = [self._link(ev) for ev in events]
        if rows:
            self._conn.execute(audit_events.insert(), rows)
            self._seal_after_commit(rows[0])

    def _link(self, ev: dict[str, Any]) -> dict[str, Any]:
        """The next row of the chain for one event (fields truncated to their columns)."""
        row: dict[str, Any] = {
            "seq": self._seq + 1,
            "ts": utcnow().isoformat(timespec="microseconds"),
            "subject": str(ev["subject"])[:200],
            "action": str(ev["action"])[:100],
            "resource": str(ev["resource"])[:300],
            "outcome": str(ev["outcome"])[:100],
            "client": str(ev.get("client", ""))[:100],
            "detail": canonical_detail(ev.get("detail")),
        }
        row["prev_hash"] = self._prev
        row["hash"] = chain_hash(self._prev, row)
        row["mac"] = self._seal.event_mac(row["hash"]) if self._seal is not None else None
        self._seq, self._prev = row["seq"], row["hash"]
        return row

    def _seal_after_commit(self, first: dict[str, Any]) -> None:
        """Once committed, the newest event becomes the sealed head (what a truncation is checked against)."""
        seal = self._seal
        if seal is None:
            return
        seq, head_hash = self._seq, self._prev

        def advance() -> None:
            seal.advance(seq, head_hash, first_sealed=int(first["seq"]))

        Database.after_commit(self._conn, "audit.seal", advance)


class AuditLog:
    """The stored audit chain: append inside a write transaction, page through it, verify it."""

    def __init__(self, db: Database, seal: AuditSeal | None = None) -> None:
        self._db = db
        self.seal = seal

    def chain(self, conn: Connection) -> AuditChain:
        """An appender for many events in one write transaction; reads the chain head once."""
        return AuditChain(conn, self.seal)

    def append(
        self,
        conn: Connection,
        *,
        subject: str,
        action: str,
        resource: str,
        outcome: str,
        client: str = "",
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one event inside the caller's write transaction, linked to the current head."""
        return self.chain(conn).append(
            subject=subject, action=action, resource=resource, outcome=outcome, client=client, detail=detail
        )

    def record(self, **fields: Any) -> dict[str, Any]:
        """Append one audit event in its own transaction."""
        with self._db.write() as conn:
            return self.append(conn, **fields)

    def page(self, after_seq: int = 0, limit: int = 100, action: str | None = None) -> list[dict[str, Any]]:
        """Events after `after_seq` in order, optionally of one action."""
        q = sa.select(audit_events).where(audit_events.c.seq > after_seq)
        if action:
            q = q.where(audit_events.c.action == action)
        q = q.order_by(audit_events.c.seq).limit(min(limit, MAX_PAGE))
        with self._db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def head_seq(self) -> int:
        """The newest event's sequence number (0 for an empty chain)."""
        with self._db.read() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(audit_events.c.seq), 0))).scalar_one())

    def verify(self, batch: int = 5000) -> ChainReport:
        """Check the whole chain (and, with a seal, its MACs and sealed head) page by page."""

        def rows() -> Iterator[dict[str, Any]]:
            last = 0
            while True:
                with self._db.read() as conn:
                    page = [
                        dict(r._mapping)
                        for r in conn.execute(
                            sa.select(audit_events)
                            .where(audit_events.c.seq > last)
                            .order_by(audit_events.c.seq)
                            .limit(batch)
                        )
                    ]
                if not page:
                    return
                yield from page
                last = int(page[-1]["seq"])

        return verify_chain(rows(), self.seal)
