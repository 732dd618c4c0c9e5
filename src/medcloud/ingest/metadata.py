"""Each DICOM file's DICOM JSON, converted once at ingest so that WADO-RS metadata is a concatenation."""

from __future__ import annotations

import mmap
import zlib
from pathlib import Path

from medcloud.formats.dicomjson import file_json
from medcloud.formats.records import DicomRecord

__all__ = ["MAX_LISTED_FRAMES", "frames_path", "frames_uri", "stored_json"]


# A BulkDataURI names its frames one by one; past this many (a file may declare any NumberOfFrames, e.g.
# 999999999999, which once made this string eat gigabytes) it names the instance instead.
MAX_LISTED_FRAMES = 10_000


def frames_uri(study: str, series: str, sop: str, rows: int | None, frames: int | None) -> str | None:
    """The pixel data's BulkDataURI relative to the DICOMweb base (None: no pixel data to serve)."""
    if rows is None:
        return None
    instance = f"studies/{study}/series/{series}/instances/{sop}"
    n = frames or 1
    if not 1 <= n <= MAX_LISTED_FRAMES:
        return instance
    return f"{instance}/frames/{','.join(str(i) for i in range(1, n + 1))}"


def frames_path(rec: DicomRecord) -> str | None:
    """The frames of an instance, relative to the DICOMweb base (None: it has no pixel data to serve)."""
    return frames_uri(rec.study_uid, rec.series_uid, rec.sop_uid, rec.rows, rec.frames)


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
