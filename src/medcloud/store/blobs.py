"""Content-addressed blob store on a local folder: SHA-256 names, atomic write + fsync, dedupe.

Layout: `<root>/<aa>/<bb>/<sha256>`; uploads are spooled to `<root>/.incoming/` while they are hashed, then
linked into place, so a crash at any moment leaves either no blob or a complete one (never half of one).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from medcloud.errors import IntegrityError, InvalidInput, NotFound, TooLarge
from medcloud.fsio import fsync_dir

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


class SpooledUpload:
    """An upload being received: bytes go to a temporary file and a hash as they arrive.

    Small uploads are also kept in memory so the ingest step can parse them without re-reading.
    """

    def __init__(self, store: LocalBlobStore, max_bytes: int, keep_in_memory_below: int = 8 * 1024**2) -> None:
        self._store = store
        self._max = max_bytes
        self._keep_below = keep_in_memory_below
        self.path = store.incoming / f"{uuid.uuid4().hex}.part"
        self._fh: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed in finish()/discard()
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] | None = []
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self._max:
            raise TooLarge(f"upload exceeds the limit of {self._max} bytes")
        assert self._fh is not None
        self._fh.write(chunk)
        self._hash.update(chunk)
        if self._chunks is not None:
            if self.size <= self._keep_below:
                self._chunks.append(chunk)
            else:
                self._chunks = None

    def finish(self, fsync: bool = True) -> str:
        """Close the part (fsync unless a batch syncs the file system once) and return the hex SHA-256."""
        assert self._fh is not None
        self._fh.flush()
        if fsync:
            os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        return self._hash.hexdigest()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def data(self) -> bytes | None:
        """The whole upload if it was small enough to keep in memory."""
        return b"".join(self._chunks) if self._chunks is not None else None

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class LocalBlobStore:
    """Blobs under one folder, named by their SHA-256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise InvalidInput("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def spool(self, max_bytes: int) -> SpooledUpload:
        return SpooledUpload(self, max_bytes)

    def commit(self, upload: SpooledUpload, *, durable: bool = True) -> StoredBlob:
        """Move a finished upload into place. Identical content already stored is kept as is.

        With `durable=False` the directory entry is not fsynced: the caller syncs many blobs at once
        with `sync_all()` before it acknowledges any of them.
        """
        sha = upload.sha256
        final = self.path_for(sha)
        if final.exists():
            upload.discard()
            return StoredBlob(sha, upload.size, created=False)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            # link() fails if another request stored the same bytes a moment ago: that is a dedupe too.
            os.link(upload.path, final)
        except FileExistsError:
            upload.discard()
            return StoredBlob(sha, upload.size, created=False)
        if durable:
            fsync_dir(final.parent)
        upload.discard()
        return StoredBlob(sha, upload.size, created=True)

    def sync_all(self, blobs: list[StoredBlob]) -> None:
        """Make blobs committed with `durable=False` durable: one syncfs, or fsync each where unsupported."""
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
        return self.path_for(sha256).exists()

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self.path_for(sha256), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is not stored") from None

    def iter_chunks(self, sha256: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with self.open(sha256) as fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def verify(self, sha256: str) -> None:
        """Re-hash a blob and raise IntegrityError if its bytes no longer match its name."""
        h = hashlib.sha256()
        for chunk in self.iter_chunks(sha256):
            h.update(chunk)
        if h.hexdigest() != sha256:
            raise IntegrityError(f"blob {sha256} does not match its hash")

    def clean_incoming(self, older_than_s: float = 3600.0) -> int:
        """Remove spooled parts a crash left behind; returns how many were removed.

        Only parts older than `older_than_s` go, so another worker's upload in flight is left alone.
        """
        n = 0
        cutoff = time.time() - older_than_s
        for p in self.incoming.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
        return n
