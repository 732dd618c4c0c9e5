"""Uploads to stored, indexed, audited records. Idempotent: the same bytes twice are stored once.

Order of work for every upload: validate, link the blob into place, make it durable, then write the
catalog rows and audit events in one transaction. A crash at any point leaves either nothing or an
unreferenced (harmless, deduplicated) blob; never a catalog row without its bytes.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from medcloud.errors import Conflict, InvalidInput, MedcloudError, TooLarge, UnsupportedFormat
from medcloud.formats.limits import MAX_INFLATED_BYTES
from medcloud.formats.records import DicomRecord, ImageRecord
from medcloud.formats.sniff import MEDIA_TYPES, sniff
from medcloud.ingest.images import read_image
from medcloud.ingest.metadata import read_with_json
from medcloud.store import Catalog, IndexEntry, LocalBlobStore, MemoryBudget, SpooledUpload

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def expected_digest(value: str | None, what: str = "X-Content-SHA256") -> str | None:
    """The SHA-256 a client declared for its bytes (64 hex digits), or InvalidInput."""
    if value is not None and not _HEX64.match(value):
        raise InvalidInput(f"{what} must be 64 hex digits")
    return value


@dataclass(frozen=True)
class IngestResult:
    status: str  # "stored" | "duplicate"
    kind: str  # "dicom" | "image"
    media_type: str
    sha256: str
    size: int
    site: str
    project: str
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    image_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class UploadItem:
    """One file of a request: its spooled bytes and what the client said about them."""

    upload: SpooledUpload
    filename: str = ""
    expected_sha256: str | None = None
    result: IngestResult | None = None
    error: MedcloudError | None = None
    study_uid: str | None = None  # the study the file must belong to (STOW-RS to /studies/{study})
    # Where `filename` is unknown until asked for: read only if the name is needed (a refusal's audit).
    name_of: Callable[[], str] | None = field(default=None, repr=False)
    _record: DicomRecord | ImageRecord | None = field(default=None, repr=False)
    _json: bytes | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """`filename`, asked of `name_of` (once) when it was not given."""
        if not self.filename and self.name_of is not None:
            self.filename, self.name_of = self.name_of(), None
        return self.filename

    @property
    def dicom_record(self) -> DicomRecord | None:
        """What the ingest reader read from this file when it was a DICOM file it accepted (else None)."""
        return self._record if isinstance(self._record, DicomRecord) else None


class BatchReception:
    """The files of one batch request as their bytes arrive, each spooled alone within one memory budget.

    Each file is judged alone: one that is too large or carries a malformed checksum fails by itself
    (its bytes dropped) while the others are received. Used as a context manager, it discards every
    file's bytes if receiving fails.
    """

    def __init__(self, blobs: LocalBlobStore, *, max_file_bytes: int, max_files: int, memory_bytes: int) -> None:
        self._blobs = blobs
        self._budget = MemoryBudget(memory_bytes)
        self._max_file_bytes = max_file_bytes
        self._max_files = max_files
        self.items: list[UploadItem] = []

    def begin(self, filename: str, expected_sha256: str | None) -> None:
        """Open the next file."""
        if len(self.items) >= self._max_files:
            raise InvalidInput(f"a batch holds at most {self._max_files} files")
        item = UploadItem(self._blobs.spool(self._max_file_bytes, budget=self._budget), filename)
        try:
            item.expected_sha256 = expected_digest(expected_sha256, "X-Content-SHA256 of a part")
        except InvalidInput as exc:
            item.error = exc
        self.items.append(item)

    def write(self, chunk: bytes | memoryview) -> None:
        """Add bytes to the open file; a file already refused keeps none."""
        item = self.items[-1]
        if item.error is not None:
            return
        try:
            item.upload.write(chunk)  # type: ignore[arg-type]
        except MedcloudError as exc:  # one oversized file fails alone; its bytes are dropped
            item.error = exc
            item.upload.discard()

    def discard(self) -> None:
        for item in self.items:
            item.upload.discard()

    def __enter__(self) -> BatchReception:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            self.discard()


@dataclass
class _Request:
    """One request's items and who sent them, while it waits for (or leads) a group commit."""

    items: list[UploadItem]
    site: str
    project: str
    subject: str
    client: str
    batch: bool
    done: bool = False
    failure: BaseException | None = None
    timings: dict[str, float] | None = None

    def lap(self, phase: str, since: float) -> float:
        """Add the time since `since` to `phase`; returns now."""
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[phase] = self.timings.get(phase, 0.0) + now - since
        return now


class Ingestor:
    """Validates, stores and indexes uploads."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: LocalBlobStore,
        *,
        require_deidentified: bool = True,
        max_upload_bytes: int = MAX_INFLATED_BYTES,
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.require_deidentified = require_deidentified
        # A deflated DICOM may not inflate past what would be accepted uncompressed.
        self.max_upload_bytes = max_upload_bytes
        self._group_cv = threading.Condition()
        self._group_queue: list[_Request] = []
        self._group_busy = False

    async def receive(self, chunks: AsyncIterable[bytes], *, max_bytes: int, declared: int | None) -> SpooledUpload:
        """Spool one file's bytes as they stream in (memory while small, else `.incoming/`), hashing them.

        Refuses a body over `max_bytes` (413) or shorter than its `declared` length (400), keeping nothing.
        """
        if declared is not None and declared > max_bytes:
            raise TooLarge(f"upload of {declared} bytes exceeds the limit of {max_bytes} bytes")
        upload = self.blobs.spool(max_bytes)
        try:
            async for chunk in chunks:
                upload.write(chunk)
        except BaseException:
            upload.discard()
            raise
        if declared is not None and declared != upload.size:
            upload.discard()
            raise InvalidInput(f"truncated upload: Content-Length {declared}, received {upload.size} bytes")
        return upload

    def batch_reception(self, *, max_file_bytes: int, max_files: int, memory_bytes: int) -> BatchReception:
        """A reception for one batch request's files (see `BatchReception`)."""
        return BatchReception(self.blobs, max_file_bytes=max_file_bytes, max_files=max_files, memory_bytes=memory_bytes)

    def ingest(
        self,
        upload: SpooledUpload,
        *,
        site: str,
        project: str,
        subject: str,
        client: str = "",
        filename: str = "",
        expected_sha256: str | None = None,
    ) -> IngestResult:
        """Ingest one file; raises the file's error."""
        item = UploadItem(upload, filename, expected_sha256)
        self.ingest_many([item], site=site, project=project, subject=subject, client=client, batch=False)
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def ingest_many(
        self,
        items: list[UploadItem],
        *,
        site: str,
        project: str,
        subject: str,
        client: str = "",
        batch: bool = True,
        timings: dict[str, float] | None = None,
    ) -> None:
        """Ingest several files with one durability barrier and one transaction (group commit).

        `timings`, if given, receives seconds per phase (validate, stage, catalog_lock, catalog, sync_wait,
        commit).

        Each item gets either `result` or `error` (an item that arrives with an error, e.g. refused while
        it was received, keeps it); one bad file never blocks the others. Refused files
        are audited in the same transaction as the stored ones. Requests of one valid file (single
        uploads, one-instance STOW-RS) arriving while another commits share the next barrier and
        transaction: the first to arrive commits everything queued by then while the others wait
        (leader/follower group commit); none is answered before the group's commit is durable.
        """
        request = _Request(items, site, project, subject, client, batch, timings=timings)
        t0 = time.perf_counter()
        try:
            for item in items:
                if item.error is not None:
                    continue
                try:
                    self._validate(item, fsync=not batch)
                except MedcloudError as exc:
                    item.error = exc
            request.lap("validate", t0)
            valid = sum(1 for i in items if i.error is None)
            if valid == 1 or (valid and not batch):
                # One file (a single upload, or a STOW-RS request of one instance): it shares the next
                # durable commit with whatever else is waiting, and is acknowledged once that is done.
                self._group_commit(request)
            elif batch:
                # A batch of many is its own group (grouping batches showed no gain at 4 clients and
                # would let one request's failure fail another's).
                self._commit([request])
        finally:
            for item in items:
                item.upload.discard()

    def _group_commit(self, request: _Request) -> None:
        with self._group_cv:
            self._group_queue.append(request)
            while not request.done and self._group_busy:
                self._group_cv.wait()
            if request.done:  # another request's leader committed this one
                if request.failure is not None:
                    raise request.failure
                return
            self._group_busy = True
            group, self._group_queue = self._group_queue, []
        try:
            self._commit(group)
        except BaseException as exc:
            for r in group:
                r.failure = exc
        finally:
            with self._group_cv:
                for r in group:
                    r.done = True
                self._group_busy = False
                self._group_cv.notify_all()
        if request.failure is not None:
            raise request.failure

    def _commit(self, requests: list[_Request]) -> None:
        """Store the valid items of `requests` (one barrier), then index and audit them (one transaction).

        The packs' `fdatasync` runs while the catalog's rows are written; the transaction commits only
        after the bytes are durable and indexed, so a row never outlives its bytes.
        """
        valid = [i for r in requests for i in r.items if i.error is None]
        lead = requests[0]
        t = time.perf_counter()
        try:
            # Spilled files of a batch were not fsynced one by one: then one syncfs covers every file here.
            pending = self.blobs.stage_many([i.upload for i in valid], durable=not any(r.batch for r in requests))
            t = lead.lap("stage", t)
        except MedcloudError as exc:  # the volume refused the write: nothing of these requests is stored
            self._refuse(requests, valid, exc)
            return
        try:
            with self.catalog.write() as conn:
                t = lead.lap("catalog_lock", t)
                events: list[dict[str, Any]] = []
                for r in requests:
                    entries = {
                        id(i): IndexEntry(i._record, i.upload.sha256, i.upload.size, dicom_json=i._json)
                        for i in r.items
                        if i.error is None and i._record is not None
                    }
                    self.catalog.index.batch(conn, list(entries.values()), site=r.site, project=r.project)
                    for item in r.items:
                        entry = entries.get(id(item))
                        if entry is not None and entry.error is not None:
                            item.error = entry.error
                        if item.error is None and entry is not None:
                            item.result = self._result(entry, r.site, r.project)
                            events.append(self._event(entry, r.subject, r.client, r.project))
                        elif item.error is not None and r.batch:
                            events.append(self._refusal(item, r))
                self.catalog.audit.chain(conn).append_many(events)
                t = lead.lap("catalog", t)
                pending.wait()  # raises StorageError: the transaction rolls back
                t = lead.lap("sync_wait", t)
            lead.lap("commit", t)
        except BaseException as exc:
            if pending.failed and isinstance(exc, MedcloudError):
                self._refuse(requests, valid, exc)
                return
            if not pending.done and not pending.failed:
                # The catalog failed first: let the sync finish so the pack's writer is released (its
                # bytes stay unreferenced, like any crash between the two steps).
                with contextlib.suppress(Exception):
                    pending.wait()
            raise

    def _refuse(self, requests: list[_Request], valid: list[UploadItem], exc: MedcloudError) -> None:
        """Mark `valid` items failed with `exc` and audit the refusals of batch requests."""
        for item in valid:
            item.error = exc
            item.result = None
        events = [self._refusal(i, r) for r in requests if r.batch for i in r.items if i.error is not None]
        if events:
            with self.catalog.write() as conn:
                self.catalog.audit.chain(conn).append_many(events)

    @staticmethod
    def _refusal(item: UploadItem, r: _Request) -> dict[str, Any]:
        """The audit event of a file refused inside a batch (a single upload's is audited at the edge)."""
        assert item.error is not None
        return {
            "subject": r.subject,
            "action": "ingest",
            "resource": f"upload/{item.name or 'unnamed'}",
            "outcome": f"refused:{item.error.status}:{item.error.type_slug}",
            "client": r.client,
            "detail": {"reason": item.error.detail[:300], "project": r.project},
        }

    def _validate(self, item: UploadItem, *, fsync: bool) -> None:
        upload = item.upload
        sha = upload.finish(fsync=fsync)
        if item.expected_sha256 is not None and item.expected_sha256.lower() != sha:
            raise InvalidInput(
                f"body does not match X-Content-SHA256 (got {upload.size} bytes hashing to {sha}): "
                "the upload was truncated or altered"
            )
        if upload.size == 0:
            raise InvalidInput("empty upload")
        data = upload.data()
        source: bytes | Path = data if data is not None else upload.path
        if data is not None:
            head = data[:132]
        else:
            with upload.path.open("rb") as fh:
                head = fh.read(132)
        kind = sniff(head)
        if kind == "unknown":
            raise UnsupportedFormat("not a DICOM Part 10 file, JPEG, PNG or TIFF")
        if kind == "dicom":
            # One parse of the file gives its record (and refusals) and its DICOM JSON.
            item._record, converted = read_with_json(
                source, require_deidentified=self.require_deidentified, max_inflated=self.max_upload_bytes
            )
            if item.study_uid is not None and item._record.study_uid != item.study_uid:
                raise Conflict(f"instance of study {item._record.study_uid}, not of {item.study_uid}")
            # Encrypted at rest with the blob store's envelope when encryption is on (plain otherwise).
            item._json = None if converted is None else self.blobs.seal_value(sha, converted)
        else:
            item._record = read_image(source, kind, item.filename)

    @staticmethod
    def _result(entry: IndexEntry, site: str, project: str) -> IngestResult:
        assert entry.status is not None
        rec = entry.record
        if isinstance(rec, DicomRecord):
            return IngestResult(
                entry.status, "dicom", MEDIA_TYPES["dicom"], entry.sha256, entry.size, site, project,
                sop_instance_uid=rec.sop_uid, study_instance_uid=rec.study_uid,
            )  # fmt: skip
        return IngestResult(
            entry.status, "image", rec.media_type, entry.sha256, entry.size, site, project, image_id=entry.image_id
        )

    @staticmethod
    def _event(entry: IndexEntry, subject: str, client: str, project: str) -> dict[str, Any]:
        rec = entry.record
        detail: dict[str, Any] = {"sha256": entry.sha256, "size": entry.size, "project": project}
        if isinstance(rec, DicomRecord):
            resource = f"instance/{rec.sop_uid}"
            detail["study"] = rec.study_uid
        else:
            resource = f"image/{entry.image_id}"
            detail["media_type"] = rec.media_type
        return {
            "subject": subject,
            "action": "ingest",
            "resource": resource,
            "outcome": entry.status,
            "client": client,
            "detail": detail,
        }
