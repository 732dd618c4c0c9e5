"""The durable outbox: de-identified payloads wait here until the hub has acknowledged them.

Layout of a state folder::

    state/
      outbox.sqlite3      items (queued / delivered / dead), sources seen, quarantine records
      payloads/<sha256>   de-identified bytes waiting to be sent (removed once delivered)
      quarantine/         de-identified files held back (suspected burned-in text); never forwarded
      gateway.lock        held by the running gateway so two processes never share one state folder
      keys.sqlite3        wrapped data keys, when payloads are encrypted at rest (`security.envelope`)

Crash safety: a payload is written to a temporary name, fsynced, renamed and its folder fsynced
before the row that points at it commits (SQLite WAL, synchronous=FULL). The source file is marked
done in the same transaction as the enqueue, so a crash at any point either leaves the source to be
processed again (same bytes, same content address) or leaves a committed item that will be sent.
An item is marked delivered only after the hub answered 2xx; a crash before that resends it and the
hub, being idempotent, answers "duplicate". At-least-once here plus idempotence there is exactly once.

Encryption at rest: with a key-encryption key (the gateway's own `encryption_key_file`,
`encryption_key_env` or `encryption_kms_command`), each payload file is written in the envelope's
stream format under a data key made once per outbox session (one wrap per run, not per file; the key
is stored, wrapped, before the first payload it encrypts). Payloads queued before encryption was on
are read as they are. Quarantined files stay in clear: a person inside the hospital reviews them.

Its length: every state change of an item is one SQL transaction here, so the crash-safety rules are
read in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from medcloud.fsio import fsync_dir, sqlite_immediate, write_atomic
from medcloud.security.envelope import STREAM_MAGIC, DataKey, Envelope, Kek, is_stream

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id               INTEGER PRIMARY KEY,
    sha256           TEXT NOT NULL UNIQUE,
    size             INTEGER NOT NULL,
    media_type       TEXT NOT NULL,
    filename         TEXT NOT NULL,
    kind             TEXT,
    sop_instance_uid TEXT,
    source           TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    hub_outcome      TEXT,
    created_at       REAL NOT NULL,
    delivered_at     REAL
);
CREATE INDEX IF NOT EXISTS items_due ON items (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS sources (
    path     TEXT NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    outcome  TEXT NOT NULL CHECK (outcome IN ('queued', 'duplicate', 'quarantined', 'rejected')),
    item_id  INTEGER,
    reason   TEXT,
    at       REAL NOT NULL,
    PRIMARY KEY (path, size, mtime_ns)
);
CREATE INDEX IF NOT EXISTS sources_outcome ON sources (outcome);
CREATE TABLE IF NOT EXISTS quarantine (
    id        INTEGER PRIMARY KEY,
    source    TEXT NOT NULL,
    stored_as TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at        REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SourceRef:
    """A file as the gateway saw it: its resolved path plus the size and mtime that identify this version."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Entry:
    """A de-identified payload on its way into the outbox."""

    ref: SourceRef
    data: bytes
    media_type: str
    filename: str
    kind: str | None = None
    sop_instance_uid: str | None = None


@dataclass(frozen=True)
class Item:
    """One queued payload."""

    id: int
    sha256: str
    size: int
    media_type: str
    filename: str
    kind: str | None
    sop_instance_uid: str | None
    source: str
    attempts: int


@dataclass(frozen=True)
class Counts:
    queued: int
    delivered: int
    dead: int
    quarantined: int
    rejected: int
    next_attempt_at: float | None
    oldest_queued_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "delivered": self.delivered,
            "dead": self.dead,
            "quarantined": self.quarantined,
            "rejected": self.rejected,
            "next_attempt_at": self.next_attempt_at,
            "oldest_queued_at": self.oldest_queued_at,
        }


class StateLocked(RuntimeError):
    """Another gateway process holds this state folder."""


class Outbox:
    """SQLite-backed queue of de-identified payloads plus the record of every source file handled.

    One connection guarded by a lock: the gateway's writes are small and SQLite is far faster than
    the network, so a single writer costs nothing and keeps the transactions easy to reason about.
    """

    def __init__(self, state_dir: Path, *, readonly: bool = False, kek: Kek | None = None) -> None:
        self.state_dir = state_dir
        self.payload_dir = state_dir / "payloads"
        self.envelope = Envelope(kek, state_dir / "keys.sqlite3")
        self._data_key: DataKey | None = None
        self.quarantine_dir = state_dir / "quarantine"
        self._lock = threading.RLock()
        db_path = state_dir / "outbox.sqlite3"
        if readonly:
            if not db_path.exists():
                raise FileNotFoundError(f"no gateway state at {state_dir} (missing {db_path.name})")
            self._db = sqlite3.connect(
                f"file:{db_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.payload_dir.mkdir(exist_ok=True)
            self.quarantine_dir.mkdir(exist_ok=True)
            self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        self._db.row_factory = sqlite3.Row
        self._lock_fd: int | None = None

    # -- process lock ---------------------------------------------------------------------------
    def acquire_process_lock(self) -> None:
        """Refuse to run two gateways on one state folder (they would send the same items twice)."""
        import fcntl

        fd = os.open(self.state_dir / "gateway.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(f"another gateway is running on {self.state_dir}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self.envelope.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with sqlite_immediate(self._db, self._lock) as db:
            yield db

    # -- sources --------------------------------------------------------------------------------
    def seen(self, ref: SourceRef) -> bool:
        """Whether this version of the source file was already handled (any outcome)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM sources WHERE path = ? AND size = ? AND mtime_ns = ?",
                (ref.path, ref.size, ref.mtime_ns),
            ).fetchone()
        return row is not None

    def record_rejected(self, ref: SourceRef, reason: str) -> None:
        """A source the gateway could not or would not read (malformed, too large, escapes its root)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO sources (path, size, mtime_ns, outcome, reason, at) "
                "VALUES (?, ?, ?, 'rejected', ?, ?)",
                (ref.path, ref.size, ref.mtime_ns, reason, time.time()),
            )

    # -- enqueue --------------------------------------------------------------------------------
    def enqueue(
        self,
        ref: SourceRef,
        data: bytes,
        *,
        media_type: str,
        filename: str,
        kind: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> tuple[int, bool]:
        """Persist a de-identified payload and mark its source done, atomically. Returns (item id, new?).

        The same bytes from another source (a copy of a file) map to the existing item: the hub would
        store them once anyway, and sending them once saves the trip.
        """
        entry = Entry(ref, data, media_type, filename, kind, sop_instance_uid)
        return self.enqueue_many([entry])[0]

    def enqueue_many(self, entries: Sequence[Entry]) -> list[tuple[int, bool]]:
        """Enqueue several payloads with one folder fsync and one commit (group commit).

        Every payload file is fsynced and the folder holding them too before the transaction that
        points at them and marks their sources done commits.
        """
        if not entries:
            return []
        shas = [hashlib.sha256(e.data).hexdigest() for e in entries]
        with self._lock:
            known = {
                sha
                for sha in set(shas)
                if self._db.execute("SELECT 1 FROM items WHERE sha256 = ?", (sha,)).fetchone() is not None
            }
        written: set[str] = set()
        for e, sha in zip(entries, shas, strict=True):
            if sha not in known and sha not in written:
                write_atomic(self.payload_dir / sha, self._seal(sha, e.data), sync_dir=False)
                written.add(sha)
        if written:
            fsync_dir(self.payload_dir)
        now = time.time()
        out: list[tuple[int, bool]] = []
        with self._tx() as db:
            for e, sha in zip(entries, shas, strict=True):
                row = db.execute("SELECT id FROM items WHERE sha256 = ?", (sha,)).fetchone()
                if row is None:
                    cur = db.execute(
                        "INSERT INTO items (sha256, size, media_type, filename, kind, sop_instance_uid, source, "
                        "state, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                        (sha, len(e.data), e.media_type, e.filename, e.kind, e.sop_instance_uid, e.ref.path, now, now),
                    )
                    item_id, new = int(cur.lastrowid or 0), True
                else:
                    item_id, new = int(row["id"]), False
                db.execute(
                    "INSERT OR REPLACE INTO sources (path, size, mtime_ns, outcome, item_id, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (e.ref.path, e.ref.size, e.ref.mtime_ns, "queued" if new else "duplicate", item_id, now),
                )
                out.append((item_id, new))
        return out

    def quarantine(self, ref: SourceRef, data: bytes, *, name: str, reason: str) -> Path:
        """Hold a de-identified file back inside the hospital; it is never forwarded."""
        sha = hashlib.sha256(data).hexdigest()
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name) or "file"
        target = self.quarantine_dir / f"{sha[:16]}-{safe}"
        if not target.exists():
            write_atomic(target, data)
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO quarantine (source, stored_as, sha256, reason, at) VALUES (?, ?, ?, ?, ?)",
                (ref.path, str(target), sha, reason, now),
            )
            db.execute(
                "INSERT OR REPLACE INTO sources (path, size, mtime_ns, outcome, reason, at) "
                "VALUES (?, ?, ?, 'quarantined', ?, ?)",
                (ref.path, ref.size, ref.mtime_ns, reason, now),
            )
        return target

    # -- forwarding -----------------------------------------------------------------------------
    def claim_due(self, now: float, exclude: Sequence[int], limit: int = 1) -> list[Item]:
        """Queued items whose retry time has come, oldest first, skipping those already in flight."""
        marks = ",".join("?" * len(exclude))
        not_in = f"AND id NOT IN ({marks})" if exclude else ""
        sql = (
            "SELECT id, sha256, size, media_type, filename, kind, sop_instance_uid, source, attempts "
            "FROM items WHERE state = 'queued' AND next_attempt_at <= ? " + not_in + " "
            "ORDER BY next_attempt_at, id LIMIT ?"
        )  # only placeholders are interpolated
        with self._lock:
            rows = self._db.execute(sql, (now, *exclude, limit)).fetchall()
        return [Item(**dict(r)) for r in rows]

    def get_item(self, item_id: int) -> Item | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, sha256, size, media_type, filename, kind, sop_instance_uid, source, attempts "
                "FROM items WHERE id = ?",
                (item_id,),
            ).fetchone()
        return Item(**dict(row)) if row is not None else None

    def db_pragmas(self) -> dict[str, Any]:
        """The durability settings in force (WAL, synchronous=FULL is 2)."""
        with self._lock:
            mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
            sync = self._db.execute("PRAGMA synchronous").fetchone()[0]
        return {"journal_mode": mode, "synchronous": sync}

    def _seal(self, sha: str, data: bytes) -> bytes:
        """A payload as stored: encrypted under this session's data key when encryption is on."""
        if not self.envelope.enabled:
            return data
        with self._lock:
            if self._data_key is None:
                dk = self.envelope.new_key("g-")
                self.envelope.persist(dk)
                self._data_key = dk
            dk = self._data_key
        return self.envelope.seal_bytes(data, dk, sha.encode())

    def payload(self, item: Item) -> bytes:
        """A queued payload's de-identified bytes (decrypted when stored encrypted)."""
        with self.open_payload(item) as fh:
            return fh.read()

    def open_payload(self, item: Item) -> BinaryIO:
        """A queued payload to stream; FileNotFoundError if its file is gone."""
        fh = open(self.payload_dir / item.sha256, "rb")  # noqa: SIM115 - returned to the caller
        try:
            encrypted = is_stream(fh.read(len(STREAM_MAGIC)))
            fh.seek(0)
            return self.envelope.open_stream(fh, item.sha256.encode()) if encrypted else fh
        except BaseException:
            fh.close()
            raise

    def mark_delivered(self, item_id: int, status: int, outcome: str) -> None:
        with self._tx() as db:
            row = db.execute("SELECT sha256 FROM items WHERE id = ?", (item_id,)).fetchone()
            db.execute(
                "UPDATE items SET state = 'delivered', attempts = attempts + 1, last_status = ?, "
                "hub_outcome = ?, last_error = NULL, delivered_at = ? WHERE id = ?",
                (status, outcome, time.time(), item_id),
            )
        # Only after the commit: a crash in between leaves an orphan that sweep_payloads removes.
        if row is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.payload_dir / row["sha256"]).unlink()

    def mark_delivered_many(self, results: Sequence[tuple[int, int, str]]) -> None:
        """(item id, HTTP status, hub outcome) for a whole batch in one transaction (one fsync)."""
        if not results:
            return
        now = time.time()
        with self._tx() as db:
            shas = []
            for item_id, status, outcome in results:
                row = db.execute("SELECT sha256 FROM items WHERE id = ?", (item_id,)).fetchone()
                if row is not None:
                    shas.append(row["sha256"])
                db.execute(
                    "UPDATE items SET state = 'delivered', attempts = attempts + 1, last_status = ?, "
                    "hub_outcome = ?, last_error = NULL, delivered_at = ? WHERE id = ?",
                    (status, outcome, now, item_id),
                )
        for sha in shas:
            with contextlib.suppress(FileNotFoundError):
                (self.payload_dir / sha).unlink()

    def mark_retry(self, item_id: int, *, at: float, status: int | None, error: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE items SET attempts = attempts + 1, next_attempt_at = ?, last_status = ?, "
                "last_error = ? WHERE id = ? AND state = 'queued'",
                (at, status, error[:2000], item_id),
            )

    def mark_retry_many(self, retries: Sequence[tuple[int, float]], *, status: int | None, error: str) -> None:
        """(item id, next attempt time) for several items refused together, in one transaction."""
        if not retries:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE items SET attempts = attempts + 1, next_attempt_at = ?, last_status = ?, "
                "last_error = ? WHERE id = ? AND state = 'queued'",
                [(at, status, error[:2000], item_id) for item_id, at in retries],
            )

    def mark_dead(self, item_id: int, *, status: int | None, error: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE items SET state = 'dead', attempts = attempts + 1, last_status = ?, last_error = ? "
                "WHERE id = ?",
                (status, error[:2000], item_id),
            )

    def retry_dead(self, ids: Sequence[int] = ()) -> int:
        """Put dead-lettered items back in the queue (all, or the given ids). Returns how many."""
        now = time.time()
        with self._tx() as db:
            if ids:
                marks = ",".join("?" * len(ids))
                sql = "UPDATE items SET state = 'queued', attempts = 0, next_attempt_at = ? WHERE state = 'dead' "
                cur = db.execute(sql + "AND id IN (" + marks + ")", (now, *ids))
            else:
                cur = db.execute(
                    "UPDATE items SET state = 'queued', attempts = 0, next_attempt_at = ? WHERE state = 'dead'",
                    (now,),
                )
            return cur.rowcount

    def forget_rejected(self) -> int:
        """Forget rejected sources so that the next scan reads them again (after someone fixed them)."""
        with self._tx() as db:
            return db.execute("DELETE FROM sources WHERE outcome = 'rejected'").rowcount

    def sweep_payloads(self) -> int:
        """Remove payload files no queued or dead item points at (left by a crash). Returns how many."""
        with self._lock:
            keep = {r[0] for r in self._db.execute("SELECT sha256 FROM items WHERE state IN ('queued', 'dead')")}
        removed = 0
        for entry in self.payload_dir.iterdir():
            if entry.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed += 1
        return removed

    # -- reporting ------------------------------------------------------------------------------
    def queued_count(self) -> int:
        """Items still to deliver (index-only; cheap enough to ask often)."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM items WHERE state = 'queued'").fetchone()[0])

    def next_due(self) -> float | None:
        """When the earliest queued item may be sent (index-only)."""
        with self._lock:
            row = self._db.execute("SELECT min(next_attempt_at) FROM items WHERE state = 'queued'").fetchone()
        return None if row[0] is None else float(row[0])

    def counts(self) -> Counts:
        with self._lock:
            by_state = dict(self._db.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall())
            by_outcome = dict(self._db.execute("SELECT outcome, count(*) FROM sources GROUP BY outcome").fetchall())
            quarantined = self._db.execute("SELECT count(*) FROM quarantine").fetchone()[0]
            nxt, oldest = self._db.execute(
                "SELECT min(next_attempt_at), min(created_at) FROM items WHERE state = 'queued'"
            ).fetchone()
        return Counts(
            queued=int(by_state.get("queued", 0)),
            delivered=int(by_state.get("delivered", 0)),
            dead=int(by_state.get("dead", 0)),
            quarantined=int(quarantined),
            rejected=int(by_outcome.get("rejected", 0)),
            next_attempt_at=nxt,
            oldest_queued_at=oldest,
        )

    def dead_items(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, filename, last_status, last_error, attempts FROM items "
                "WHERE state = 'dead' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [dict(r) for r in rows]

    def rejected_sources(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT path, reason, at FROM sources WHERE outcome = 'rejected' ORDER BY at LIMIT ?", (limit,)
            ).fetchall()
        return [dict(r) for r in rows]

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, stored_as, reason, at FROM quarantine ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [dict(r) for r in rows]

    def queued_items(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, filename, attempts, next_attempt_at, last_status, last_error FROM items "
                "WHERE state = 'queued' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [dict(r) for r in rows]
