"""Intake: find source files, wait until they are complete, de-identify them and fill the outbox.

A file is read only once its size and modification time have stopped changing (a scanner or a copy
still writing it would otherwise be read half-written), only if it resolves inside the folder the
gateway was given (a symlink or `..` that leads elsewhere is refused and recorded), and only if it is
within the size limit. Whatever cannot be read or de-identified is recorded as rejected, with its
reason, and never blocks the files behind it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from medcloud.errors import MedcloudError
from medcloud.gateway.outbox import Entry, Outbox, SourceRef
from medcloud.ingest.dicom import read_dicom

log = logging.getLogger("medcloud.gateway")

# Names that copy tools and editors use for files still being written, or that are not images.
_SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~", ".filepart")
_NOT_IMAGES = frozenset({"dicomdir", "thumbs.db", "desktop.ini", ".ds_store"})


class DeidResult(Protocol):
    """What `medcloud.deid.DeidOutcome` offers the gateway."""

    @property
    def data(self) -> bytes: ...
    @property
    def kind(self) -> str: ...
    @property
    def media_type(self) -> str: ...
    @property
    def quarantine_reason(self) -> str | None: ...
    @property
    def sop_instance_uid(self) -> str | None: ...
    @property
    def suggested_name(self) -> str: ...


class Deidentify(Protocol):
    """What `medcloud.deid.Deidentifier` offers the gateway."""

    def deidentify_bytes(self, data: bytes, filename: str) -> DeidResult: ...


@dataclass
class IntakeStats:
    queued: int = 0
    duplicates: int = 0
    quarantined: int = 0
    rejected: int = 0
    skipped_seen: int = 0


@dataclass
class _Candidate:
    size: int
    mtime_ns: int
    observed_at: float


def read_file_list(list_file: Path) -> list[str]:
    """Paths from a list file: one per line, blank lines and `#` comments ignored; `-` reads stdin."""
    import sys

    text = sys.stdin.read() if str(list_file) == "-" else list_file.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class Intake:
    """Turns candidate paths into outbox items, quarantine entries or rejections (single-threaded)."""

    def __init__(
        self,
        outbox: Outbox,
        deidentifier: Deidentify,
        root: Path,
        *,
        max_file_bytes: int,
        settle_seconds: float = 2.0,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.deidentifier = deidentifier
        self.root = root.resolve()
        self.max_file_bytes = max_file_bytes
        self.settle_seconds = settle_seconds
        self.group_commit = 32  # files per outbox commit while a backlog is being read
        self.stats = IntakeStats()
        self.events: queue.SimpleQueue[str] = queue.SimpleQueue()  # filled by the folder watcher thread
        self._candidates: dict[str, _Candidate] = {}
        self._on_enqueued = on_enqueued
        # Network receivers call receive() from their own threads; file intake is single-threaded.
        self._receive_lock = threading.Lock()
        self._last_reason: str | None = None

    @property
    def pending(self) -> int:
        return len(self._candidates)

    # -- discovering candidates -----------------------------------------------------------------
    def scan(self, folder: Path | None = None) -> int:
        """Offer every file under `folder` (default: the root). Symlinked folders are not followed."""
        top = folder or self.root
        offered = 0
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for d in list(dirnames):
                p = Path(dirpath, d)
                if p.is_symlink():
                    self.offer(p)  # refused (and recorded) if it leads out of the root
            for name in filenames:
                self.offer(Path(dirpath, name))
                offered += 1
        return offered

    def offer_list(self, entries: Iterable[str]) -> int:
        """Offer paths from a file list; relative entries are taken relative to the root."""
        n = 0
        for entry in entries:
            p = Path(entry)
            self.offer(p if p.is_absolute() else self.root / p)
            n += 1
        return n

    def drain_events(self) -> None:
        while True:
            try:
                path = self.events.get_nowait()
            except queue.Empty:
                return
            self.offer(Path(path))

    def offer(self, path: Path) -> None:
        """Consider `path`; it is processed once it has been seen unchanged for the settle time."""
        name = path.name
        if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
            return
        key = os.path.abspath(path)  # lexical: keeps `..` visible for the escape check
        try:
            st = os.lstat(key)
        except OSError:
            self._candidates.pop(key, None)
            return
        prev = self._candidates.get(key)
        if prev is None or (prev.size, prev.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._candidates[key] = _Candidate(st.st_size, st.st_mtime_ns, time.time())

    # -- processing -----------------------------------------------------------------------------
    def process_ready(self, now: float | None = None, budget_seconds: float = 1.0) -> int:
        """Process candidates that have settled; stops after `budget_seconds` so the caller stays live."""
        start = time.monotonic()
        done = 0
        batch: list[Entry] = []
        for key in list(self._candidates):
            if time.monotonic() - start > budget_seconds:
                break
            cand = self._candidates[key]
            t = now if now is not None else time.time()
            try:
                st = os.lstat(key)
            except OSError:
                del self._candidates[key]
                continue
            if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                self._candidates[key] = _Candidate(st.st_size, st.st_mtime_ns, t)
                continue
            quiet_for = max(t - cand.observed_at, t - st.st_mtime_ns / 1e9)
            if quiet_for < self.settle_seconds:
                continue
            del self._candidates[key]
            self.handle(Path(key), batch)
            done += 1
            if len(batch) >= self.group_commit:
                self._flush(batch)
        self._flush(batch)
        return done

    def _flush(self, batch: list[Entry]) -> None:
        """Commit de-identified files to the outbox together: one folder fsync, one transaction."""
        if not batch:
            return
        with self._receive_lock:
            results = self.outbox.enqueue_many(batch)
        batch.clear()
        for _, new in results:
            if new:
                self.stats.queued += 1
            else:
                self.stats.duplicates += 1
        if self._on_enqueued is not None:
            self._on_enqueued()

    def handle(self, path: Path, batch: list[Entry] | None = None) -> str:
        """De-identify one settled file and record the outcome. Returns the outcome's name.

        With `batch`, a file to be queued is appended to it ("pending") for the caller to flush."""
        try:
            lst = os.lstat(path)
        except OSError:
            return "vanished"
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            ref = SourceRef(str(path), lst.st_size, lst.st_mtime_ns)
            if not self.outbox.seen(ref):
                how = "a symlink to" if path.is_symlink() else "resolves to"
                reason = f"path escapes the watched folder: {path} is {how} {resolved}, outside {self.root}"
                log.warning("refused: %s", reason)
                self.outbox.record_rejected(ref, reason)
                self.stats.rejected += 1
            return "rejected"
        try:
            st = os.stat(resolved)
        except OSError:
            return "vanished"
        if not os.path.isfile(resolved):
            return "not-a-file"
        ref = SourceRef(str(resolved), st.st_size, st.st_mtime_ns)
        if self.outbox.seen(ref):
            self.stats.skipped_seen += 1
            return "seen"
        if path.name.lower() in _NOT_IMAGES:
            return self._reject(ref, f"{path.name} is an index or system file, not an image")
        if st.st_size > self.max_file_bytes:
            return self._reject(ref, f"file too large: {st.st_size} bytes > limit {self.max_file_bytes}")
        if st.st_size == 0:
            return self._reject(ref, "empty file")
        try:
            data = self._read(resolved, st)
        except FileNotFoundError:
            return "vanished"
        except _Changed:
            self.offer(path)  # still being written: look again after it settles
            return "changed"
        except OSError as exc:
            return self._reject(ref, f"cannot read: {exc.strerror or exc}")
        with self._receive_lock:
            return self._process(ref, data, path.name, batch)

    def receive(self, data: bytes, source: str, name: str) -> tuple[str, str | None]:
        """Take a file that arrived over the network (C-STORE): (outcome, reason). Thread-safe.

        `source` names it in the records (e.g. `dicom://CT01@10.0.0.5/<uid>`); the same source with
        the same size is recognised as a resend and not processed twice.
        """
        ref = SourceRef(source, len(data), 0)
        with self._receive_lock:
            if self.outbox.seen(ref):
                self.stats.skipped_seen += 1
                return "seen", None
            if len(data) > self.max_file_bytes:
                reason = f"too large: {len(data)} bytes > limit {self.max_file_bytes}"
                self._reject(ref, reason)
                return "rejected", reason
            self._last_reason = None
            outcome = self._process(ref, data, name)
            return outcome, self._last_reason

    def _process(self, ref: SourceRef, data: bytes, name: str, batch: list[Entry] | None = None) -> str:
        try:
            result = self.deidentifier.deidentify_bytes(data, name)
        except MedcloudError as exc:
            return self._reject(ref, f"{exc.title.lower()}: {exc.detail}")
        except Exception as exc:  # a file that crashes the parser must not stop the others
            log.debug("de-identification crashed on %s", ref.path, exc_info=True)
            return self._reject(ref, f"de-identification failed: {type(exc).__name__}: {exc}")
        if result.quarantine_reason:
            reason = result.quarantine_reason
            stored = self.outbox.quarantine(ref, result.data, name=result.suggested_name, reason=reason)
            log.warning("quarantined %s: %s (kept at %s, not forwarded)", ref.path, reason, stored)
            self.stats.quarantined += 1
            return "quarantined"
        if result.kind == "dicom":
            # The hub's own check, run here: a file it would refuse is reported at the site with its
            # reason instead of travelling to become a dead letter.
            try:
                read_dicom(result.data)
            except MedcloudError as exc:
                return self._reject(ref, f"the hub would refuse it: {exc.detail}")
        entry = Entry(ref, result.data, result.media_type, result.suggested_name, result.kind, result.sop_instance_uid)
        if batch is not None:
            batch.append(entry)
            return "pending"
        [(_, new)] = self.outbox.enqueue_many([entry])
        if new:
            self.stats.queued += 1
        else:
            self.stats.duplicates += 1
        if self._on_enqueued is not None:
            self._on_enqueued()
        return "queued" if new else "duplicate"

    def _reject(self, ref: SourceRef, reason: str) -> str:
        self._last_reason = reason
        log.warning("rejected %s: %s", ref.path, reason)
        self.outbox.record_rejected(ref, reason)
        self.stats.rejected += 1
        return "rejected"

    @staticmethod
    def _read(path: Path, st: os.stat_result) -> bytes:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            fst = os.fstat(fd)
            if (fst.st_ino, fst.st_size, fst.st_mtime_ns) != (st.st_ino, st.st_size, st.st_mtime_ns):
                raise _Changed
            chunks = []
            remaining = fst.st_size
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 8 * 1024 * 1024))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
            if len(data) != st.st_size or os.fstat(fd).st_mtime_ns != st.st_mtime_ns:
                raise _Changed
            return data
        finally:
            os.close(fd)


class _Changed(Exception):
    """The file changed while it was being read."""
