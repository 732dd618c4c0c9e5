"""Where the audit chain is stored: appending events inside write transactions, paging, verifying,
and the signed Merkle checkpoints over it (tree heads, inclusion and consistency proofs).

The chain rule, the key and the check live in `medcloud.security.audit`, the tree and its signatures in
`medcloud.security.merkle`; this module holds the SQL.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.errors import Conflict, IntegrityError, NotFound
from medcloud.security.audit import GENESIS, AuditSeal, ChainReport, canonical_detail, chain_hash, verify_chain
from medcloud.security.merkle import (
    KEYS_FORMAT,
    LeafHashes,
    LogKey,
    MerkleTree,
    ProofError,
    TreeHead,
    leaf_entry,
    leaf_hash,
    proof_document,
    public_pem,
    rotation_statement,
    trusted_keys,
)
from medcloud.security.policy import BREAK_GLASS_MARK
from medcloud.store.db import Database, driver_execute, utcnow
from medcloud.store.queries import MAX_PAGE
from medcloud.store.tables import audit_checkpoints, audit_events, audit_log_keys

__all__ = ["AuditChain", "AuditLog"]


def _marked(subject: str, detail: dict[str, Any] | None) -> dict[str, Any] | None:
    """Acts under an opened break-glass account are high-severity events, whichever path records them."""
    if BREAK_GLASS_MARK not in subject:
        return detail
    return {**(detail or {}), "break_glass": True, "severity": "high"}


# Built once: every audited write reads the chain's head and inserts (building costs more than running).
_HEAD = sa.select(audit_events.c.seq, audit_events.c.hash).order_by(audit_events.c.seq.desc()).limit(1)
_INSERT = audit_events.insert()


class AuditChain:
    """Appends events to the hash chain inside one write transaction (which serializes writers)."""

    def __init__(self, conn: Connection, seal: AuditSeal | None = None) -> None:
        self._conn = conn
        self._seal = seal
        head = driver_execute(conn, _HEAD)
        self._seq, self._prev = (int(head[0][0]), str(head[0][1])) if head else (0, GENESIS)

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

    def append_many(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append events in order with one multi-row insert (each still chained to the one before);
        returns the stored rows."""
        rows = [self._link(ev) for ev in events]
        if rows:
            driver_execute(self._conn, _INSERT, rows)
            self._seal_after_commit(rows[0])
        return rows

    def append_each(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """As `append_many`, but an event that cannot be stored (a detail that is not JSON) is left out
        and answered with its error, the others still chained in order: one caller's bad event must not
        fail the callers it shares a group commit with."""
        out: list[dict[str, Any] | Exception] = []
        for ev in events:
            try:
                out.append(self._link(ev))
            except (TypeError, ValueError) as exc:  # _link changes nothing before it succeeds
                out.append(exc)
        rows = [r for r in out if isinstance(r, dict)]
        if rows:
            driver_execute(self._conn, _INSERT, rows)
            self._seal_after_commit(rows[0])
        return out

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
            "detail": canonical_detail(_marked(str(ev["subject"]), ev.get("detail"))),
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


@dataclasses.dataclass(eq=False)
class _Pending:
    """One `AuditLog.record` call waiting for (or leading) a group commit."""

    fields: dict[str, Any]
    row: dict[str, Any] | None = None
    failure: BaseException | None = None
    done: bool = False


class AuditLog:
    """The stored audit chain: append inside a write transaction, page through it, verify it."""

    def __init__(self, db: Database, seal: AuditSeal | None = None, log_key: LogKey | None = None) -> None:
        self._db = db
        self.seal = seal
        self.log_key = log_key
        # Leaf hashes of the committed events, extended as the log grows (proofs and checkpoints read it).
        self._leaves = LeafHashes()
        self._tree = MerkleTree(self._leaves)
        self._tree_lock = threading.Lock()
        # Group commit of `record` (events appended outside a caller's transaction).
        self._group_cv = threading.Condition()
        self._group_queue: list[_Pending] = []
        self._group_busy = False

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
        """Append one audit event in its own transaction, and return once that transaction is durable.

        Group commit: callers that arrive while another's transaction is being written queue up, and the
        next leader appends all of them, in arrival order, in one transaction (one fsync instead of one
        each). Nobody returns before the transaction holding its event has committed, so a caller that
        answers after `record` (a read of image bytes) never answers for an event a crash could lose; the
        chain, its seal and the Merkle leaves are those of events appended one by one.
        """
        if missing := {"subject", "action", "resource", "outcome"} - fields.keys():
            raise TypeError(f"an audit event needs {sorted(missing)}")  # checked before it can join a group
        if extra := fields.keys() - {"subject", "action", "resource", "outcome", "client", "detail"}:
            raise TypeError(f"unknown audit event fields {sorted(extra)}")
        mine = _Pending(fields)
        with self._group_cv:
            self._group_queue.append(mine)
            while not mine.done and self._group_busy:
                self._group_cv.wait()
            if not mine.done:
                self._group_busy = True
                group, self._group_queue = self._group_queue, []
        if not mine.done:
            try:
                self._commit_group(group)
            except BaseException as exc:  # nothing of the group was committed
                for p in group:
                    p.failure = p.failure or exc
            finally:
                with self._group_cv:
                    for p in group:
                        p.done = True
                    self._group_busy = False
                    self._group_cv.notify_all()
        if mine.failure is not None:
            raise mine.failure
        assert mine.row is not None
        return mine.row

    def _commit_group(self, group: list[_Pending]) -> None:
        with self._db.write() as conn:
            stored = self.chain(conn).append_each([p.fields for p in group])
        for p, row in zip(group, stored, strict=True):
            if isinstance(row, Exception):
                p.failure = row
            else:
                p.row = row

    def page(
        self, after_seq: int = 0, limit: int = 100, action: str | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Events after `after_seq` in order, optionally of one action, optionally recorded at or after `since`."""
        q = sa.select(audit_events).where(audit_events.c.seq > after_seq)
        if action:
            q = q.where(audit_events.c.action == action)
        if since is not None:
            # `ts` is stored as UTC ISO text of one fixed shape, so text order is time order.
            when = since.astimezone(timezone.utc) if since.tzinfo else since.replace(tzinfo=timezone.utc)
            q = q.where(audit_events.c.ts >= when.isoformat(timespec="microseconds"))
        q = q.order_by(audit_events.c.seq).limit(min(limit, MAX_PAGE))
        with self._db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def last(self, action: str) -> dict[str, Any] | None:
        """The newest event of one action, or None."""
        q = sa.select(audit_events).where(audit_events.c.action == action).order_by(audit_events.c.seq.desc())
        with self._db.read() as conn:
            r = conn.execute(q.limit(1)).first()
        return dict(r._mapping) if r else None

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The newest `n` events, oldest first."""
        q = sa.select(audit_events).order_by(audit_events.c.seq.desc()).limit(min(n, MAX_PAGE))
        with self._db.read() as conn:
            return [dict(r._mapping) for r in reversed(conn.execute(q).all())]

    def head_seq(self) -> int:
        """The newest event's sequence number (0 for an empty chain)."""
        with self._db.read() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(audit_events.c.seq), 0))).scalar_one())

    def _rows(self, after: int = 0, upto: int | None = None, batch: int = 5000) -> Iterator[dict[str, Any]]:
        """Stored events after `after` (up to `upto`) in order, read page by page."""
        last = after
        while True:
            q = sa.select(audit_events).where(audit_events.c.seq > last)
            if upto is not None:
                q = q.where(audit_events.c.seq <= upto)
            with self._db.read() as conn:
                page = [dict(r._mapping) for r in conn.execute(q.order_by(audit_events.c.seq).limit(batch))]
            if not page:
                return
            yield from page
            last = int(page[-1]["seq"])

    def verify(self, batch: int = 5000) -> ChainReport:
        """Check the whole chain (and, with a seal, its MACs and sealed head) page by page, then every
        signed checkpoint against a tree built afresh from the stored events."""
        leaves = LeafHashes()

        def tapped() -> Iterator[dict[str, Any]]:
            for row in self._rows(batch=batch):
                leaves.append(leaf_hash(leaf_entry(row)))
                yield row

        report = verify_chain(tapped(), self.seal)
        if not report.ok:
            return report
        return self._verify_checkpoints(report, MerkleTree(leaves))

    def _verify_checkpoints(self, report: ChainReport, tree: MerkleTree) -> ChainReport:
        heads = self.checkpoints()
        keys = self.trusted_keys() if self.log_key is not None else {}
        for head in heads:
            problem = ""
            if self.log_key is not None:
                try:
                    head.verify_with(keys)  # the current key, or an earlier one it took over from
                except ProofError as exc:
                    problem = str(exc)
            if not problem and head.tree_size > len(tree):
                problem = f"it covers {head.tree_size} events but the log holds {len(tree)}: events were removed"
            elif not problem and tree.root(head.tree_size) != head.root_hash:
                problem = "its root does not match the stored events: an event it covers was altered or reordered"
            if problem:
                return dataclasses.replace(
                    report, ok=False, reason=f"signed checkpoint at size {head.tree_size}: {problem}",
                    checkpoints=len(heads),
                )  # fmt: skip
        return dataclasses.replace(report, checkpoints=len(heads))

    # Signed checkpoints -------------------------------------------------------------------------

    def _synced_tree(self) -> MerkleTree:
        """The tree over every committed event (call with `_tree_lock` held)."""
        for row in self._rows(after=len(self._leaves)):
            if int(row["seq"]) != len(self._leaves) + 1:
                raise IntegrityError(f"audit event {len(self._leaves) + 1} is missing: the log cannot be proven")
            self._leaves.append(leaf_hash(leaf_entry(row)))
        return self._tree

    def checkpoints(self) -> list[TreeHead]:
        """Every stored signed tree head, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size)).all()
        return [_head(r._mapping) for r in rows]

    def latest_checkpoint(self) -> TreeHead | None:
        with self._db.read() as conn:
            r = conn.execute(
                sa.select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size.desc()).limit(1)
            ).first()
        return _head(r._mapping) if r else None

    def checkpoint_at(self, tree_size: int) -> TreeHead | None:
        with self._db.read() as conn:
            r = conn.execute(sa.select(audit_checkpoints).where(audit_checkpoints.c.tree_size == tree_size)).first()
        return _head(r._mapping) if r else None

    # Log keys and their rotation --------------------------------------------------------------------

    def rotations(self) -> list[dict[str, Any]]:
        """The rotation statements, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(audit_log_keys.c.rotation)
                .where(audit_log_keys.c.rotation.is_not(None))
                .order_by(audit_log_keys.c.created_at)
            ).all()
        return [json.loads(r.rotation) for r in rows]

    def trusted_keys(self) -> dict[str, Any]:
        """The public keys this hub's log was signed with, by log id: the current key, and every earlier
        one reachable from it through rotation statements both keys signed (a key merely present in the
        table, without such a statement, is not trusted)."""
        key = self.current_key()
        return trusted_keys(key.public_key, self.rotations()) if key is not None else {}

    def keys_document(self) -> dict[str, Any]:
        """Every public key of the log with its rotations: what an outside verifier follows across them."""
        key = self.current_key()
        with self._db.read() as conn:
            rows = [
                dict(r._mapping) for r in conn.execute(sa.select(audit_log_keys).order_by(audit_log_keys.c.created_at))
            ]
        keys = [
            {"log_id": r["log_id"], "public_key": r["public_key"], "created_at": _iso(r["created_at"]),
             "retired_at": _iso(r["retired_at"]) if r["retired_at"] else None}
            for r in rows
        ]  # fmt: skip
        if key is not None and key.log_id not in {k["log_id"] for k in keys}:
            keys.append({"log_id": key.log_id, "public_key": public_pem(key.public_key), "created_at": None,
                         "retired_at": None})  # fmt: skip
        return {
            "format": KEYS_FORMAT,
            "current": key.log_id if key is not None else None,
            "keys": keys,
            "rotations": self.rotations(),
        }

    def rotate_key(self, new: LogKey) -> dict[str, Any]:
        """Hand the log to `new`: the old key signs a checkpoint over every event, both keys sign the
        rotation statement, and the catalog keeps both public keys. The caller replaces the key file."""
        old = self.current_key()
        if old is None:
            raise Conflict("no audit log key to rotate")
        if new.log_id == old.log_id:
            raise Conflict("the new log key is the current one")
        head = self.checkpoint()
        statement = rotation_statement(old, new, head)
        now = utcnow()
        with self._db.write() as conn:
            known = {r.log_id for r in conn.execute(sa.select(audit_log_keys.c.log_id))}
            if old.log_id not in known:  # the first key: its row is made at its first rotation
                conn.execute(
                    audit_log_keys.insert().values(
                        log_id=old.log_id, public_key=public_pem(old.public_key), created_at=now, rotation=None
                    )
                )
            conn.execute(audit_log_keys.update().where(audit_log_keys.c.log_id == old.log_id).values(retired_at=now))
            conn.execute(
                audit_log_keys.insert().values(
                    log_id=new.log_id, public_key=public_pem(new.public_key), created_at=now,
                    rotation=json.dumps(statement, sort_keys=True),
                )
            )  # fmt: skip
        self.log_key = new
        return statement

    def current_key(self) -> LogKey | None:
        """The log key, re-read when its file was replaced (a rotation by another process)."""
        key = self.log_key
        if key is not None and key.path is not None and key.changed_on_disk():
            self.log_key = key = LogKey.open(key.path, create=False)
        return key

    def checkpoint(self) -> TreeHead:
        """Sign the tree over every committed event and store the head (the newest one if nothing grew)."""
        key = self.current_key()
        if key is None:
            raise Conflict("no audit log key: checkpoints are signed by the hub that holds it")
        with self._tree_lock:
            tree = self._synced_tree()
            size = len(tree)
            latest = self.latest_checkpoint()
            if latest is not None and latest.tree_size >= size:
                return latest
            head = key.sign(size, int(time.time() * 1000), tree.root(size))
            row = {
                "tree_size": head.tree_size, "timestamp": head.timestamp, "root_hash": head.root_hash.hex(),
                "log_id": head.log_id, "signature": head.signature.hex(),
            }  # fmt: skip
            with self._db.write() as conn:  # writers are serialized: check, then insert
                taken = conn.execute(sa.select(audit_checkpoints).where(audit_checkpoints.c.tree_size == size)).first()
                if taken is not None:  # another process signed this size first: theirs stands
                    return _head(taken._mapping)
                conn.execute(audit_checkpoints.insert().values(**row))
            return head

    def maybe_checkpoint(self, every_events: int, max_age_seconds: float) -> TreeHead | None:
        """Sign a checkpoint when `every_events` events came since the last one, or any came and the last
        one is older than `max_age_seconds`; None when nothing is due."""
        latest = self.latest_checkpoint()
        head = self.head_seq()
        signed = latest.tree_size if latest is not None else 0
        if head <= signed:
            return None
        age = time.time() - latest.timestamp / 1000 if latest is not None else float("inf")
        if head - signed >= every_events or age >= max_age_seconds:
            return self.checkpoint()
        return None

    def prove(self, seq: int, *, since: TreeHead | None = None, since_size: int | None = None) -> dict[str, Any]:
        """A proof document for event `seq` against the newest checkpoint (one is signed if none covers
        it), with a consistency path from `since` (a head the caller saved) or the stored `since_size`."""
        with self._db.read() as conn:
            r = conn.execute(sa.select(audit_events).where(audit_events.c.seq == seq)).first()
        if r is None:
            raise NotFound(f"no audit event {seq}")
        head = self.latest_checkpoint()
        if head is None or head.tree_size < seq:
            head = self.checkpoint()
        if since is None and since_size is not None:
            since = self.checkpoint_at(since_size)
            if since is None and since_size != 0:
                raise NotFound(f"no signed checkpoint of size {since_size}")
        if since is not None and since.tree_size > head.tree_size:
            raise Conflict(f"the saved tree head ({since.tree_size}) is newer than the log's ({head.tree_size})")
        with self._tree_lock:
            tree = self._synced_tree()
            return proof_document(dict(r._mapping), tree, head, since)


def _iso(dt: datetime) -> str:
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)).isoformat()


def _head(m: Any) -> TreeHead:
    return TreeHead(
        int(m["tree_size"]), int(m["timestamp"]), bytes.fromhex(m["root_hash"]), str(m["log_id"]),
        bytes.fromhex(m["signature"]),
    )  # fmt: skip
