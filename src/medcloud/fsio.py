"""Durable-file helpers: the one way the platform writes a file that must survive a crash whole."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["fsync_dir", "fsync_path", "sqlite_immediate", "write_atomic"]


def fsync_path(path: Path) -> None:
    """Make a file's bytes, or a folder's entries (a new or renamed file), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a new or renamed file) durable."""
    fsync_path(path)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, sync_dir: bool = True) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the whole new one.

    The file is written under a temporary name in the same folder, created with `mode` whatever the
    umask, fsynced, renamed into place and (unless `sync_dir=False`, where the caller fsyncs the
    folder once for several files) the folder is fsynced too. A failed write leaves no temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


@contextlib.contextmanager
def sqlite_immediate(
    db: sqlite3.Connection, lock: contextlib.AbstractContextManager[Any]
) -> Iterator[sqlite3.Connection]:
    """A write transaction on an autocommit (`isolation_level=None`) sqlite3 connection that takes the
    database's write lock up front (BEGIN IMMEDIATE), so writers of other processes queue instead of
    failing at commit; `lock` serializes this process's threads. Rolled back on any exception."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
