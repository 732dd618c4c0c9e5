"""Small blobs packed into append-only files, so storing one costs an append, not a file creation.

Why: a DICOM slice or a photo is tens to hundreds of kilobytes, and creating one file per blob costs more
than everything else ingest does (about 1 ms of kernel time per file on the ext4 volumes we measured, see
docs/hub.md). Facebook's Haystack, SeaweedFS volumes and git packfiles make the same trade.

Layout under `<blob root>/packs/`:

- `<name>.pack`: a 16-byte file header (`MEDCLOUDPACK`, version), then records, each a 48-byte header
  (`MCPK`, version, flags, length, SHA-256) followed by the bytes. Records are self-describing, so a pack
  can be checked or re-indexed without anything else.
- `index.sqlite3`: SHA-256 -> (pack, offset, length), WAL, `synchronous=NORMAL`.

Durability order for a batch: append every record, `fdatasync` the pack once, then commit the index rows.
A crash before the index commit leaves unreferenced bytes in a pack (garbage, never a dangling index row);
the catalog is written only after this returns. The index commit itself is not fsynced: a process crash
cannot lose it (WAL), and after a power loss the index is behind at most by records that are durable in
their packs, which `recover()` re-indexes when the store opens (it reads only the packs' tails past
their last indexed record). Each pack is appended to by one writer at a time (an
`flock` held while it is open; one open pack per concurrent writer, and a process never reopens an old
pack for appending), so processes and threads never interleave records.

Erasure (`remove`) overwrites the record's bytes with zeros in place and drops its index row.

Encryption at rest (`security.envelope`): with an envelope that has a key-encryption key, each new pack
gets its own AES-256-GCM data key (key id = the pack's name, stored wrapped before the pack is created;
keys are made `KEY_RESERVE` at a time)
and its records carry `FLAG_ENCRYPTED` with `nonce + ciphertext + tag` as their bytes; the header keeps
the plaintext's SHA-256 (the associated data) and the stored length. Records of packs written before
encryption was switched on stay readable as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag

from medcloud.errors import IntegrityError, StorageError
from medcloud.pools import SharedPool
from medcloud.security.envelope import DataKey, Envelope

FILE_MAGIC = b"MEDCLOUDPACK\x00\x01\x00\x00"  # 16 bytes: magic, format version 1
_REC = struct.Struct("<4sBBHQ32s")  # magic, version, flags, reserved, length, sha256
REC_MAGIC = b"MCPK"
REC_HEADER = _REC.size  # 48
FLAG_ERASED = 1
FLAG_ENCRYPTED = 2
_NONCE = 12
DEFAULT_PACK_MAX = 1024**3  # a writer starts a new pack beyond this size


@dataclass(frozen=True)
class PackLocation:
    pack: str
    offset: int  # of the record's data (after its header)
    size: int


@dataclass(frozen=True)
class PackRecord:
    offset: int
    size: int
    sha256: str
    erased: bool
    damaged: bool = False  # whole, but its bytes do not hash to its SHA-256 (or fail to decrypt)
    encrypted: bool = False


def _record_aad(digest: bytes) -> bytes:
    return b"medcloud pack record\x00" + digest


# Data keys stored at once for packs about to open (see `PackStore._next_pack`).
KEY_RESERVE = 4


def _pack_name() -> str:
    return f"{time.strftime('%Y%m%d')}-{uuid.uuid4().hex[:16]}"


class _Writer:
    """One open pack, appended to by one thread at a time."""

    def __init__(self, folder: Path, name: str, key: DataKey | None) -> None:
        self.name = name
        self.path = folder / f"{self.name}.pack"
        # The data key was stored (wrapped) before the pack exists: no record without its key.
        self.key = key
        self._aead = self.key.aead() if self.key is not None else None
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self.fd, FILE_MAGIC)
        self.size = len(FILE_MAGIC)

    def append(self, sha256: str, data: bytes) -> PackLocation:
        digest = bytes.fromhex(sha256)
        flags = 0
        if self._aead is not None:
            nonce = os.urandom(_NONCE)
            data = nonce + self._aead.encrypt(nonce, data, _record_aad(digest))
            flags = FLAG_ENCRYPTED
        header = _REC.pack(REC_MAGIC, 1, flags, 0, len(data), digest)
        start = self.size
        written = os.writev(self.fd, [header, data])
        if written != len(header) + len(data):
            raise OSError(f"short write to {self.path.name}: {written} of {len(header) + len(data)} bytes")
        self.size += written
        return PackLocation(self.name, start + REC_HEADER, len(data))

    def abandon(self, size: int, exc: OSError) -> StorageError:
        """After a failed write or sync: cut the batch's records off the end (best effort: they are
        unreferenced either way), close the pack for good, and return the error to raise."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, size)
            self.size = size
        self.close()
        return StorageError(f"could not write to the blob store: {exc.strerror or exc}")

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


_SYNC_INLINE_BELOW = 1024**2  # bytes appended below which the pack is synced in the caller's thread
# A few long-lived threads that run packs' fdatasync while their callers write catalog rows.
_SYNC_POOL = SharedPool(4, "pack-sync")


class PendingPut:
    """Records appended to a pack whose `fdatasync` runs in a background thread until `wait()`.

    A small append (under 1 MiB) is synced at once in the caller's thread instead.
    """

    def __init__(
        self, store: PackStore, writer: _Writer | None, rows: list[tuple[bytes, str, int, int]], created: list[bool],
        start: int,
    ) -> None:  # fmt: skip
        self._store, self._writer, self._rows, self._created, self._start = store, writer, rows, created, start
        self._error: OSError | None = None
        self._future: Future[None] | None = None
        if writer is not None:
            appended = sum(r[3] for r in rows)
            if appended < _SYNC_INLINE_BELOW:  # a sync this small is quicker than a hand-off to a thread
                self._sync()
            else:
                self._future = _SYNC_POOL.get().submit(self._sync)

    def _sync(self) -> None:
        assert self._writer is not None
        try:
            self._writer.sync()
        except OSError as exc:
            self._error = exc

    def wait(self) -> list[bool]:
        """Block until the bytes are durable, then index them; StorageError if the disk refused."""
        writer = self._writer
        if writer is None:
            return self._created
        if self._future is not None:
            self._future.result()
        self._writer = None
        if self._error is not None:
            raise writer.abandon(self._start, self._error)
        # The writer goes back only after its rows are committed, so each pack's index commits are in
        # append order and `indexed_end` never points past a record whose row could still be lost.
        try:
            self._store._commit_rows(writer.name, self._rows, writer.size)
        finally:
            self._store._give_back(writer)
        return self._created


class PackStore:
    """The packs of one blob root: append many blobs with one sync, read one by its SHA-256."""

    def __init__(self, root: Path, pack_max: int = DEFAULT_PACK_MAX, envelope: Envelope | None = None) -> None:
        self.folder = root / "packs"
        self.envelope = envelope
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pack_max = pack_max
        self._lock = threading.Lock()  # guards the index connection and the idle-writer list
        self._idle: list[_Writer] = []
        self._reserve_lock = threading.Lock()  # guards the reserve of stored data keys for new packs
        self._reserve: list[tuple[str, DataKey]] = []
        self._db = sqlite3.connect(self.folder / "index.sqlite3", timeout=60, check_same_thread=False,
                                   isolation_level=None)  # fmt: skip
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS blobs (sha256 BLOB PRIMARY KEY, pack TEXT NOT NULL,"
            " offset INTEGER NOT NULL, size INTEGER NOT NULL) WITHOUT ROWID"
        )
        # How far each pack is indexed: one row per pack, updated with each batch (cheaper than a
        # secondary index on every blob row); recovery reads only what lies beyond.
        self._db.execute("CREATE TABLE IF NOT EXISTS packs (name TEXT PRIMARY KEY, indexed_end INTEGER NOT NULL)")
        self.recovered = self.recover()

    def recover(self) -> int:
        """Index records that are in packs but not in the index (lost with a power failure); returns how many.

        Packs that a live writer holds (its `flock`) are skipped; they are that writer's business.
        """
        added = 0
        for path in sorted(self.folder.glob("*.pack")):
            fd = os.open(path, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                with self._lock:
                    row = self._db.execute("SELECT indexed_end FROM packs WHERE name = ?", (path.stem,))
                    indexed_end = (row.fetchone() or (len(FILE_MAGIC),))[0]
                if indexed_end >= os.fstat(fd).st_size:
                    continue
                rows = [
                    (bytes.fromhex(r.sha256), path.stem, r.offset, r.size)
                    for r in self.scan(path.stem, start=indexed_end)
                    if not r.erased and not r.damaged
                ]
                if rows:
                    added += self._commit_rows(path.stem, rows, rows[-1][2] + rows[-1][3])
            finally:
                os.close(fd)  # releases the flock
        return added

    # -- index -------------------------------------------------------------------------------------
    def locate(self, sha256: str) -> PackLocation | None:
        with self._lock:
            row = self._db.execute(
                "SELECT pack, offset, size FROM blobs WHERE sha256 = ?", (bytes.fromhex(sha256),)
            ).fetchone()
        return PackLocation(*row) if row else None

    def known(self, shas: Sequence[str]) -> set[str]:
        found: set[str] = set()
        keys = [bytes.fromhex(s) for s in set(shas)]
        with self._lock:
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                placeholders = ",".join("?" * len(part))  # placeholders only: the values are bound
                rows = self._db.execute(f"SELECT sha256 FROM blobs WHERE sha256 IN ({placeholders})", part).fetchall()  # noqa: S608
                found.update(r[0].hex() for r in rows)
        return found

    # -- writing -------------------------------------------------------------------------------------
    def _take_writer(self) -> _Writer:
        with self._lock:
            while self._idle:
                w = self._idle.pop()
                if w.size < self.pack_max:
                    return w
                w.close()  # full: sealed, never appended to again
        name, key = self._next_pack()
        return _Writer(self.folder, name, key)

    def _next_pack(self) -> tuple[str, DataKey | None]:
        """A new pack's name and, with encryption on, its data key, already stored durably.

        Keys are made `KEY_RESERVE` at a time in one key-table transaction (one sync, one pass of the KEK)
        and handed out as packs open: writers opened together (a fresh hub taking concurrent batches)
        wait for one transaction instead of queueing for one each. A reserved key whose pack never opens
        (the hub stopped) is an unused row of the key table, re-wrapped by rotations like any other.
        """
        envelope = self.envelope
        if envelope is None or not envelope.enabled:
            return _pack_name(), None
        with self._reserve_lock:
            if not self._reserve:
                names = [_pack_name() for _ in range(KEY_RESERVE)]
                self._reserve = list(zip(names, envelope.create_keys(names), strict=True))
            name, key = self._reserve.pop(0)
        return name, key

    def _give_back(self, w: _Writer) -> None:
        with self._lock:
            self._idle.append(w)

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Store (sha256, bytes) pairs durably; returns, per pair, whether it was new.

        Content already indexed, or repeated within `items`, is not written again. Raises StorageError
        when the volume refuses the write; nothing is then indexed.
        """
        return self.stage_many(items).wait()

    def stage_many(self, items: Sequence[tuple[str, bytes]]) -> PendingPut:
        """Append the new pairs now and start their `fdatasync` in the background.

        The caller may do other work (the catalog's SQL) while the disk syncs, then must call
        `wait()`, which returns what `put_many` returns once the bytes are durable and indexed.
        """
        known = self.known([sha for sha, _ in items])
        created: list[bool] = []
        todo: dict[str, bytes] = {}
        for sha, data in items:
            is_new = sha not in known and sha not in todo
            created.append(is_new)
            if is_new:
                todo[sha] = data
        if not todo:
            return PendingPut(self, None, [], created, 0)
        writer = self._take_writer()
        start = writer.size
        rows = []
        try:
            for sha, data in todo.items():
                loc = writer.append(sha, data)
                rows.append((bytes.fromhex(sha), loc.pack, loc.offset, loc.size))
        except OSError as exc:
            raise writer.abandon(start, exc) from exc
        return PendingPut(self, writer, rows, created, start)

    def _commit_rows(self, pack: str, rows: list[tuple[bytes, str, int, int]], indexed_end: int) -> int:
        """Index `rows` of one pack and move its indexed end forward, in one transaction; returns rows added."""
        with self._lock:
            try:
                before = self._db.total_changes
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?, ?)", rows)
                added = self._db.total_changes - before
                self._db.execute(
                    "INSERT INTO packs VALUES (?, ?) ON CONFLICT(name) DO UPDATE"
                    " SET indexed_end = max(indexed_end, excluded.indexed_end)",
                    (pack, indexed_end),
                )
                self._db.execute("COMMIT")
                return added
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StorageError(f"could not index the blob store: {exc}") from exc

    # -- reading -------------------------------------------------------------------------------------
    def _pack_path(self, name: str) -> Path:
        return self.folder / f"{name}.pack"

    def read(self, sha256: str, loc: PackLocation) -> bytes:
        """The blob's bytes; IntegrityError if the record no longer matches its index row."""
        with open(self._pack_path(loc.pack), "rb") as fh:
            fh.seek(loc.offset - REC_HEADER)
            raw = fh.read(REC_HEADER + loc.size)
        if len(raw) != REC_HEADER + loc.size:
            raise IntegrityError(f"blob {sha256}: pack {loc.pack} is shorter than its index says")
        magic, _version, flags, _r, length, digest = _REC.unpack_from(raw)
        if magic != REC_MAGIC or length != loc.size or digest.hex() != sha256 or flags & FLAG_ERASED:
            raise IntegrityError(f"blob {sha256}: the record in pack {loc.pack} does not match its index")
        return self._plain(loc.pack, flags, digest, raw[REC_HEADER:])

    def _plain(self, pack: str, flags: int, digest: bytes, data: bytes) -> bytes:
        """A record's plaintext: decrypted with its pack's data key when it is encrypted."""
        if not flags & FLAG_ENCRYPTED:
            return data
        envelope = self.envelope
        if envelope is None:
            raise IntegrityError(f"pack {pack} holds encrypted records and this store has no key table")
        aead = envelope.aead(pack)  # KeyUnavailable when no configured KEK unwraps it
        try:
            return aead.decrypt(data[:_NONCE], data[_NONCE:], _record_aad(digest))
        except InvalidTag:
            raise IntegrityError(
                f"blob {digest.hex()}: its encrypted record in pack {pack} failed authentication (altered or damaged)"
            ) from None

    def remove(self, sha256: str) -> bool:
        """Erase a blob: zero its bytes in the pack, flag the record, drop the index row."""
        loc = self.locate(sha256)
        if loc is None:
            return False
        fd = os.open(self._pack_path(loc.pack), os.O_WRONLY)
        try:
            zeros = bytes(min(loc.size, 1024**2))
            pos = loc.offset
            while pos < loc.offset + loc.size:
                n = min(len(zeros), loc.offset + loc.size - pos)
                os.pwrite(fd, zeros[:n], pos)
                pos += n
            header = _REC.pack(REC_MAGIC, 1, FLAG_ERASED, 0, loc.size, bytes.fromhex(sha256))
            os.pwrite(fd, header, loc.offset - REC_HEADER)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self._db.execute("DELETE FROM blobs WHERE sha256 = ?", (bytes.fromhex(sha256),))
        return True

    def scan(self, name: str, start: int | None = None) -> Iterator[PackRecord]:
        """Walk one pack's records (for checks and re-indexing) from `start`; stops at a torn tail.

        A whole record whose bytes no longer match its SHA-256 is yielded with `damaged` set.

        `start` is a record boundary: the end of a record's data, as an index row gives it.
        """
        with open(self._pack_path(name), "rb") as fh:
            if fh.read(len(FILE_MAGIC)) != FILE_MAGIC:
                raise IntegrityError(f"{name}.pack is not a medcloud pack")
            pos = len(FILE_MAGIC) if start is None else start
            fh.seek(pos)
            while True:
                head = fh.read(REC_HEADER)
                if len(head) < REC_HEADER:
                    return
                magic, _v, flags, _r, length, digest = _REC.unpack(head)
                if magic != REC_MAGIC:
                    return
                data = fh.read(length)
                if len(data) < length:
                    return
                erased = bool(flags & FLAG_ERASED)
                encrypted = bool(flags & FLAG_ENCRYPTED)
                damaged = False
                if not erased:
                    try:
                        damaged = hashlib.sha256(self._plain(name, flags, digest, data)).digest() != digest
                    except IntegrityError:
                        damaged = True
                yield PackRecord(pos + REC_HEADER, length, digest.hex(), erased, damaged, encrypted)
                pos += REC_HEADER + length

    def entries(self) -> Iterator[tuple[str, PackLocation]]:
        """Every indexed blob, in pack and offset order (a snapshot taken at the call)."""
        with self._lock:
            rows = self._db.execute("SELECT sha256, pack, offset, size FROM blobs ORDER BY pack, offset").fetchall()
        for sha, pack, offset, size in rows:
            yield sha.hex(), PackLocation(pack, offset, size)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM blobs").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for w in self._idle:
                w.close()
            self._idle.clear()
            self._db.close()
