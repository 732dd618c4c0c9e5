"""Each DICOM file's DICOM JSON, converted once at ingest so that WADO-RS metadata is a concatenation."""

from __future__ import annotations

import mmap
import zlib
from pathlib import Path

from medcloud.formats.dicomjson import file_json
from medcloud.formats.records import DicomRecord

__all__ = ["frames_path", "stored_json"]


def frames_path(rec: DicomRecord) -> str | None:
    """The frames of an instance, relative to the DICOMweb base (None: it has no pixel data to serve)."""
    if rec.rows is None:
        return None
    frames = ",".join(str(n) for n in range(1, (rec.frames or 1) + 1))
    return f"studies/{rec.study_uid}/series/{rec.series_uid}/instances/{rec.sop_uid}/frames/{frames}"


def stored_json(source: bytes | Path, rec: DicomRecord, *, max_inflated: int) -> bytes | None:
    """The zlib-compressed DICOM JSON of a file already read as `rec`, or None if it cannot be converted.

    A file that the catalog accepts but this stricter walk does not (a malformed item deep in a short
    sequence) is still stored: its metadata is then converted by pydicom when first asked for.
    """
    try:
        if isinstance(source, bytes):
            body = file_json(source, frames_path(rec), max_inflated=max_inflated)
        else:
            with open(source, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                body = file_json(mapped, frames_path(rec), max_inflated=max_inflated)
    except Exception:
        return None
    return zlib.compress(body, 1)
