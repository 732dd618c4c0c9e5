"""Content-addressed blob store on a local folder: SHA-256 names, durable writes, dedupe.

Small blobs (below `pack_below`, 4 MiB by default) are appended to packs (`store/packs.py`): one
`fdatasync` per batch and no file creation per blob. Larger ones are files,
`<root>/<aa>/<bb>/<sha256>`: spooled to `<root>/.incoming/` while they are hashed, fsynced, then linked
into place. Either way a crash at any moment leaves no blob or a complete one, never half of one.

Encryption at rest (`security.envelope`): with a key-encryption key configured, packs are encrypted per
pack and each large blob with its own data key (the stream format, random access preserved): the
validated spool file is encrypted into `.incoming/`, its data key stored (wrapped), and only then is
the ciphertext linked into place; the plaintext spool file is removed when its request ends. Blobs
stored before encryption was switched on are read as they are (a mixed store is normal).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from medcloud.errors import IntegrityError, InvalidInput, NotFound, TooLarge
from medcloud.fsio import fsync_dir
from medcloud.security.envelope import STREAM_MAGIC, Envelope, is_stream
from medcloud.store.packs import FILE_MAGIC, PackStore, PendingPut

DEFAULT_PACK_BELOW = 4 * 1024**2  # blobs smaller than this go into packs

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    created: bool  # False when identical bytes were already stored


def _syncfs(path: Path) -> bool:
    """Flush the whole file system holding `path` in one call (Linux syncfs); False where unavailable."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        return int(libc.syncfs(fd)) == 0
    finally:
        os.close(fd)


class MemoryBudget:
    """How many bytes one request may hold in memory before its uploads spill to temporary files."""

    def __init__(self, limit: int) -> None:
        self.left = limit


class SpooledUpload:
    """An upload being received and hashed as it arrives.

    It stays in memory while it is small (below the store's packing threshold and within the request's
    memory budget) and then goes into a pack; a larger one spills to `<root>/.incoming/` and is linked
    into place as a file of its own.
    """

    def __init__(self, store: LocalBlobStore, max_bytes: int, budget: MemoryBudget | None = None) -> None:
        self._store = store
        self._max = max_bytes
        self._keep_below = store.pack_below
        self._budget = budget
        self._path: Path | None = None  # only once spilled
        self._fh: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] | None = []
        self._finished = False
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self._max:
            raise TooLarge(f"upload exceeds the limit of {self._max} bytes")
        self._hash.update(chunk)
        if self._chunks is not None:
            fits = self.size < self._keep_below and (self._budget is None or self._budget.left >= len(chunk))
            if fits:
                self._chunks.append(chunk)
                if self._budget is not None:
                    self._budget.left -= len(chunk)
                return
            self._spill()
        assert self._fh is not None
        self._fh.write(chunk)

    @property
    def path(self) -> Path:
        """The spill file (named on first use; it exists only once the upload has spilled)."""
        if self._path is None:
            self._path = self._store.incoming / f"{uuid.uuid4().hex}.part"
        return self._path

    def _spill(self) -> None:
        assert self._chunks is not None
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in finish()/discard()
        for c in self._chunks:
            self._fh.write(c)
        if self._budget is not None:
            self._budget.left += sum(len(c) for c in self._chunks)
        self._chunks = None

    @property
    def in_memory(self) -> bool:
        return self._chunks is not None

    def finish(self, fsync: bool = True) -> str:
        """Complete the upload (a spilled one is fsynced unless a batch syncs the file system once).

        Returns the hex SHA-256.
        """
        if self._fh is not None:
            self._fh.flush()
            if fsync:
                os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
        self._finished = True
        return self._hash.hexdigest()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def data(self) -> bytes | None:
        """The whole upload if it is held in memory (joined once: later calls return the same bytes)."""
        chunks = self._chunks
        if chunks is None:
            return None
        if len(chunks) != 1 or type(chunks[0]) is not bytes:  # a memoryview chunk is copied out too
            chunks[:] = [b"".join(chunks)]
        return chunks[0]

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._chunks is not None and self._budget is not None:
            self._budget.left += sum(len(c) for c in self._chunks)
        self._chunks = [] if self._chunks is not None else None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()


def _check_digest(sha256: str, fh: BinaryIO, chunk_size: int = 1024 * 1024) -> None:
    """Hash what `fh` holds; IntegrityError if it is not `sha256`."""
    h = hashlib.sha256()
    while chunk := fh.read(chunk_size):
        h.update(chunk)
    if h.hexdigest() != sha256:
        raise IntegrityError(f"blob {sha256} does not match its hash")


@dataclass
class BlobCheck:
    """What `LocalBlobStore.check` found."""

    ok: int = 0
    pack_records: int = 0
    erased: int = 0
    bad: list[str] = field(default_factory=list)
    torn_tails: list[str] = field(default_factory=list)  # unacknowledged bytes left by a crash: harmless


class PendingCommit:
    """Blobs staged by `LocalBlobStore.stage_many`: `wait()` returns them once durable and indexed."""

    def __init__(self, pending: PendingPut, packed: list[tuple[int, str, int]], out: list[StoredBlob | None]):
        self._pending = pending
        self._packed = packed  # (position, sha256, size) of the uploads that went into a pack
        self._out = out  # the linked (large) blobs already; packed positions are None until wait()
        self._done = False
        self._failed = False

    @property
    def done(self) -> bool:
        """True once `wait()` has returned (the bytes are durable and indexed)."""
        return self._done

    @property
    def failed(self) -> bool:
        """True if `wait()` raised: the disk refused the bytes and nothing was indexed."""
        return self._failed

    def wait(self) -> list[StoredBlob]:
        try:
            created = self._pending.wait()
        except BaseException:
            self._failed = True
            raise
        self._done = True
        for (i, sha, size), new in zip(self._packed, created, strict=True):
            self._out[i] = StoredBlob(sha, size, created=new)
        return [b for b in self._out if b is not None]


class LocalBlobStore:
    """Blobs under one folder, named by their SHA-256: small ones in packs, large ones as files."""

    def __init__(self, root: Path, pack_below: int = DEFAULT_PACK_BELOW, envelope: Envelope | None = None) -> None:
        self.root = root
        self.incoming = root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.pack_below = pack_below
        # Without a KEK the envelope still recognises encrypted blobs (and refuses them clearly).
        self.envelope = envelope if envelope is not None else Envelope(None, root / "keys.sqlite3")
        self.packs = PackStore(root, envelope=self.envelope)

    def path_for(self, sha256: str) -> Path:
        """Where a large (unpacked) blob lives."""
        if not _SHA256.match(sha256):
            raise InvalidInput("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def spool(self, max_bytes: int, budget: MemoryBudget | None = None) -> SpooledUpload:
        return SpooledUpload(self, max_bytes, budget)

    def commit(self, upload: SpooledUpload, *, durable: bool = True) -> StoredBlob:
        """Store one finished upload; identical content already stored is kept as is."""
        return self.commit_many([upload], durable=durable)[0]

    def commit_many(self, uploads: list[SpooledUpload], *, durable: bool = True) -> list[StoredBlob]:
        """Store finished uploads; returns a StoredBlob per upload, in order.

        In-memory uploads are appended to a pack with one `fdatasync` for all of them. Spilled ones are
        linked into place; with `durable=False` their directory entries are made durable by one `syncfs`
        (or per-file fsyncs) before this returns, instead of one directory fsync each.
        """
        return self.stage_many(uploads, durable=durable).wait()

    def stage_many(self, uploads: list[SpooledUpload], *, durable: bool = True) -> PendingCommit:
        """Like `commit_many`, but the packs' sync runs in the background until `wait()` on the result.

        Large (spilled) uploads are linked and made durable before this returns.
        """
        packed = [(i, u) for i, u in enumerate(uploads) if u.in_memory]
        out: list[StoredBlob | None] = [None] * len(uploads)
        linked: list[StoredBlob] = []
        for i, u in enumerate(uploads):
            if not u.in_memory:
                out[i] = self._link(u, durable=durable)
                linked.append(out[i])  # type: ignore[arg-type]
        if not durable:
            self.sync_all(linked)
        # Dedupe is against the packs: a small blob stored as a file under an older threshold is packed
        # again rather than paying a stat() per upload; reads find either copy.
        pending = self.packs.stage_many([(u.sha256, u.data() or b"") for _, u in packed])
        for _, u in packed:
            u.discard()
        return PendingCommit(pending, [(i, u.sha256, u.size) for i, u in packed], out)

    def _link(self, upload: SpooledUpload, *, durable: bool) -> StoredBlob:
        sha = upload.sha256
        final = self.path_for(sha)
        if final.exists() or self.packs.locate(sha) is not None:
            upload.discard()
            return StoredBlob(sha, upload.size, created=False)
        final.parent.mkdir(parents=True, exist_ok=True)
        source = self._encrypt_spool(upload, durable=durable) if self.envelope.enabled else upload.path
        try:
            # link() fails if another request stored the same bytes a moment ago: that is a dedupe too.
            os.link(source, final)
        except FileExistsError:
            upload.discard()
            return StoredBlob(sha, upload.size, created=False)
        finally:
            if source != upload.path:
                source.unlink(missing_ok=True)
        if durable:
            fsync_dir(final.parent)
        upload.discard()
        return StoredBlob(sha, upload.size, created=True)

    def _encrypt_spool(self, upload: SpooledUpload, *, durable: bool) -> Path:
        """Encrypt a spilled upload with a fresh data key into `.incoming/`; the key is stored first."""
        dk = self.envelope.new_key("b-")
        target = self.incoming / f"{uuid.uuid4().hex}.enc"
        try:
            with open(upload.path, "rb") as src, open(target, "wb") as raw:
                writer = self.envelope.writer(raw, dk)
                while chunk := src.read(1024 * 1024):
                    writer.write(chunk)
                writer.finalize()
                raw.flush()
                if durable:
                    os.fsync(raw.fileno())
            self.envelope.persist(dk)  # durable before the blob it decrypts is linked into place
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    def sync_all(self, blobs: list[StoredBlob]) -> None:
        """Make linked blobs committed with `durable=False` durable: one syncfs, or fsync each."""
        created = [b for b in blobs if b.created]
        if not created or _syncfs(self.root):
            return
        for b in created:
            path = self.path_for(b.sha256)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(path.parent)

    def put_bytes(self, data: bytes, max_bytes: int | None = None) -> StoredBlob:
        up = self.spool(max_bytes or len(data) + 1)
        try:
            up.write(data)
            up.finish()
            return self.commit(up)
        except BaseException:
            up.discard()
            raise

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists() or self.packs.locate(sha256) is not None

    def missing(self, shas: list[str]) -> list[str]:
        """Those of `shas` not stored: one index query for the packed ones, a stat for each of the rest."""
        packed = self.packs.known(shas)
        return [s for s in shas if s not in packed and not self.path_for(s).exists()]

    def read_bytes(self, sha256: str) -> bytes:
        with self.open(sha256) as fh:
            return fh.read()

    def open(self, sha256: str) -> BinaryIO:
        """A readable file object for the blob; NotFound when it is not stored."""
        path = self.path_for(sha256)
        loc = self.packs.locate(sha256)
        if loc is not None:
            try:
                return io.BytesIO(self.packs.read(sha256, loc))
            except FileNotFoundError:
                raise NotFound(f"blob {sha256} is indexed but its pack is missing") from None
        try:
            return self._open_file(path)
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is not stored") from None

    def _open_file(self, path: Path) -> BinaryIO:
        """A large blob's plaintext: the file itself, or a decrypting view of an encrypted one."""
        fh = open(path, "rb")  # noqa: SIM115 - returned to the caller
        try:
            encrypted = is_stream(fh.read(len(STREAM_MAGIC)))
            fh.seek(0)
            return self.envelope.open_stream(fh) if encrypted else fh
        except BaseException:
            fh.close()
            raise

    def plain_path(self, sha256: str) -> Path | None:
        """The blob's file when it is stored unpacked and unencrypted (readers that want a path); else None."""
        path = self.path_for(sha256)
        try:
            with path.open("rb") as fh:
                return None if is_stream(fh.read(len(STREAM_MAGIC))) else path
        except FileNotFoundError:
            return None

    def seal_value(self, sha256: str, data: bytes) -> bytes:
        """A catalog value about blob `sha256` (its DICOM JSON) encrypted at rest when encryption is on."""
        return self.envelope.seal_value(data, b"instance_json\x00" + sha256.encode())

    def open_value(self, sha256: str, data: bytes) -> bytes:
        """The plain form of `seal_value`'s output; values kept before encryption pass through."""
        return self.envelope.open_value(data, b"instance_json\x00" + sha256.encode())

    def iter_chunks(self, sha256: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with self.open(sha256) as fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def verify(self, sha256: str) -> None:
        """Re-hash a blob and raise IntegrityError if its bytes no longer match its name."""
        with self.open(sha256) as fh:
            _check_digest(sha256, fh)

    def remove(self, sha256: str) -> bool:
        """Erase a blob (its bytes are overwritten in a pack, or the file unlinked); False if absent."""
        removed = self.packs.remove(sha256)
        with contextlib.suppress(FileNotFoundError):
            self.path_for(sha256).unlink()
            removed = True
        return removed

    def check(self, progress: Callable[[int], None] | None = None) -> BlobCheck:
        """Re-read every stored blob and compare it with its name; walk every pack record by record.

        `progress(n)` is called with the bytes read so far's increment. Nothing is changed.
        """
        report = BlobCheck()
        for pack in sorted(self.packs.folder.glob("*.pack")):
            end = len(FILE_MAGIC)
            for rec in self.packs.scan(pack.stem):
                report.pack_records += 1
                report.erased += rec.erased
                end = rec.offset + rec.size
            size = pack.stat().st_size
            if end < size:
                report.torn_tails.append(f"{pack.name}: {size - end} bytes after the last whole record at {end}")
        for sha, loc in self.packs.entries():
            try:
                _check_digest(sha, io.BytesIO(self.packs.read(sha, loc)))
                report.ok += 1
            except (IntegrityError, OSError) as exc:
                report.bad.append(f"{sha}: {exc}")
            if progress is not None:
                progress(loc.size)
        for path in sorted(self.root.glob("??/??/*")):
            if not _SHA256.match(path.name):
                continue
            try:  # the file itself, even where a packed copy of the same bytes exists
                with self._open_file(path) as fh:
                    _check_digest(path.name, fh)
                report.ok += 1
            except (IntegrityError, OSError) as exc:
                report.bad.append(f"{path.name}: {exc}")
            if progress is not None:
                progress(path.stat().st_size)
        return report

    def count(self) -> int:
        """How many blobs are stored (packed and as files)."""
        files = sum(1 for p in self.root.glob("??/??/*") if p.is_file() and _SHA256.match(p.name))
        return self.packs.count() + files

    def close(self) -> None:
        self.packs.close()
        self.envelope.close()

    def clean_incoming(self, older_than_s: float = 3600.0) -> int:
        """Remove spooled parts a crash left behind; returns how many were removed.

        Only parts older than `older_than_s` go, so another worker's upload in flight is left alone.
        """
        n = 0
        cutoff = time.time() - older_than_s
        for p in [*self.incoming.glob("*.part"), *self.incoming.glob("*.enc")]:
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
        return n
