"""One upload to one stored, indexed, audited record. Idempotent: the same bytes twice are stored once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcloud.errors import InvalidInput, UnsupportedFormat
from medcloud.ingest.dicom import read_dicom
from medcloud.ingest.images import read_image
from medcloud.ingest.sniff import MEDIA_TYPES, sniff
from medcloud.store.blobs import LocalBlobStore, SpooledUpload
from medcloud.store.catalog import Catalog


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


class Ingestor:
    """Validates, stores and indexes uploads. Blob first, then catalog row and audit event in one transaction."""

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
        try:
            sha = upload.finish()
            if expected_sha256 is not None and expected_sha256.lower() != sha:
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
                rec = read_dicom(source, require_deidentified=self.require_deidentified)
                blob = self.blobs.commit(upload)
                with self.catalog.write() as conn:
                    status = self.catalog.record_instance(
                        conn, rec, site=site, project=project, sha256=sha, size=blob.size
                    )
                    self.catalog.append_audit(
                        conn,
                        subject=subject,
                        action="ingest",
                        resource=f"instance/{rec.sop_uid}",
                        outcome=status,
                        client=client,
                        detail={"sha256": sha, "size": blob.size, "project": project, "study": rec.study_uid},
                    )
                return IngestResult(
                    status,
                    "dicom",
                    MEDIA_TYPES["dicom"],
                    sha,
                    blob.size,
                    site,
                    project,
                    sop_instance_uid=rec.sop_uid,
                    study_instance_uid=rec.study_uid,
                )
            img = read_image(source, kind, filename)
            blob = self.blobs.commit(upload)
            with self.catalog.write() as conn:
                status, image_id = self.catalog.record_image(
                    conn, img, site=site, project=project, sha256=sha, size=blob.size
                )
                self.catalog.append_audit(
                    conn,
                    subject=subject,
                    action="ingest",
                    resource=f"image/{image_id}",
                    outcome=status,
                    client=client,
                    detail={"sha256": sha, "size": blob.size, "project": project, "media_type": img.media_type},
                )
            return IngestResult(status, "image", img.media_type, sha, blob.size, site, project, image_id=image_id)
        finally:
            upload.discard()
