"""Uploads to stored, indexed, audited records. Idempotent: the same bytes twice are stored once.

Order of work for every upload: validate, link the blob into place, make it durable, then write the
catalog rows and audit events in one transaction. A crash at any point leaves either nothing or an
unreferenced (harmless, deduplicated) blob; never a catalog row without its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from medcloud.errors import InvalidInput, MedcloudError, UnsupportedFormat
from medcloud.ingest.dicom import read_dicom
from medcloud.ingest.images import read_image
from medcloud.ingest.sniff import MEDIA_TYPES, sniff
from medcloud.store.blobs import LocalBlobStore, SpooledUpload, StoredBlob
from medcloud.store.catalog import AuditChain, Catalog, DicomRecord, ImageRecord


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
    _record: DicomRecord | ImageRecord | None = field(default=None, repr=False)
    _blob: StoredBlob | None = field(default=None, repr=False)


class Ingestor:
    """Validates, stores and indexes uploads."""

    def __init__(self, catalog: Catalog, blobs: LocalBlobStore, *, require_deidentified: bool = True) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.require_deidentified = require_deidentified

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
    ) -> None:
        """Ingest several files with one durability barrier and one transaction (group commit).

        Each item gets either `result` or `error`; one bad file never blocks the others. Refused files
        are audited in the same transaction as the stored ones.
        """
        try:
            for item in items:
                try:
                    self._validate(item, fsync=not batch)
                    item._blob = self.blobs.commit(item.upload, durable=not batch)
                except MedcloudError as exc:
                    item.error = exc
            if batch:
                self.blobs.sync_all([i._blob for i in items if i._blob is not None])
            with self.catalog.write() as conn:
                chain = self.catalog.audit_chain(conn)
                for item in items:
                    if item.error is None:
                        try:
                            with conn.begin_nested():
                                self._index(
                                    conn, chain, item, site=site, project=project, subject=subject, client=client
                                )
                        except MedcloudError as exc:
                            item.error = exc
                    if item.error is not None and batch:  # a single upload's refusal is audited at the edge
                        chain.append(
                            subject=subject,
                            action="ingest",
                            resource=f"upload/{item.filename or 'unnamed'}"[:300],
                            outcome=f"refused:{item.error.status}:{item.error.type_slug}",
                            client=client,
                            detail={"reason": item.error.detail[:300], "project": project},
                        )
        finally:
            for item in items:
                item.upload.discard()

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
            item._record = read_dicom(source, require_deidentified=self.require_deidentified)
        else:
            item._record = read_image(source, kind, item.filename)

    def _index(
        self,
        conn: Connection,
        chain: AuditChain,
        item: UploadItem,
        *,
        site: str,
        project: str,
        subject: str,
        client: str,
    ) -> None:
        blob, rec = item._blob, item._record
        assert blob is not None and rec is not None
        if isinstance(rec, DicomRecord):
            status = self.catalog.record_instance(
                conn, rec, site=site, project=project, sha256=blob.sha256, size=blob.size
            )
            chain.append(
                subject=subject,
                action="ingest",
                resource=f"instance/{rec.sop_uid}",
                outcome=status,
                client=client,
                detail={"sha256": blob.sha256, "size": blob.size, "project": project, "study": rec.study_uid},
            )
            item.result = IngestResult(
                status, "dicom", MEDIA_TYPES["dicom"], blob.sha256, blob.size, site, project,
                sop_instance_uid=rec.sop_uid, study_instance_uid=rec.study_uid,
            )  # fmt: skip
            return
        status, image_id = self.catalog.record_image(
            conn, rec, site=site, project=project, sha256=blob.sha256, size=blob.size
        )
        chain.append(
            subject=subject,
            action="ingest",
            resource=f"image/{image_id}",
            outcome=status,
            client=client,
            detail={"sha256": blob.sha256, "size": blob.size, "project": project, "media_type": rec.media_type},
        )
        item.result = IngestResult(
            status, "image", rec.media_type, blob.sha256, blob.size, site, project, image_id=image_id
        )
