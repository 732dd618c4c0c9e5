"""Each DICOM file's DICOM JSON, converted once at ingest so that WADO-RS metadata is a concatenation."""

from __future__ import annotations

import mmap
from pathlib import Path

from medcloud.formats.dicom import open_dicom
from medcloud.formats.dicomjson import file_json, ingest_walk, pack_stored, parsed_json
from medcloud.formats.records import DicomRecord
from medcloud.ingest.dicom import WANTED, read_opened, read_source, record_of

__all__ = ["MAX_LISTED_FRAMES", "frames_path", "frames_uri", "read_with_json", "stored_json"]


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
    """The compressed DICOM JSON (`pack_stored`) of a file already read as `rec`, or None if it cannot be converted.

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
    return pack_stored(body)


def read_with_json(
    source: bytes | Path, *, require_deidentified: bool, max_inflated: int
) -> tuple[DicomRecord, bytes | None]:
    """`read_dicom` and `stored_json` of one file with one parse of it (what ingest needs of each file).

    The record and the refusals are `read_dicom`'s; the JSON is `stored_json`'s (None where it cannot be
    converted), written from the elements the reader split the file into instead of a second parse.
    """
    return read_source(source, lambda data: _read_with_json(data, require_deidentified, max_inflated))


def _read_with_json(
    data: bytes | mmap.mmap, require_deidentified: bool, max_inflated: int
) -> tuple[DicomRecord, bytes | None]:
    buf, meta, syn, pos, _ = open_dicom(data, max_inflated=max_inflated, inflate_to_disk=True)
    try:
        walk = ingest_walk(buf, syn, pos, WANTED)  # one walk for the record's spans and the JSON
    except Exception:  # a file that walk does not take: the two walks below read or refuse it as always
        walk = None
    if walk is not None:
        rec = record_of(buf, meta, syn, walk.top, walk.last, require_deidentified)
        return rec, pack_stored(walk.json(meta, frames_path(rec)))
    rec, parsed = read_opened(buf, meta, syn, pos, require_deidentified)
    if parsed is None:  # the strict walk failed: converted by pydicom when first asked for (as stored_json)
        return rec, None
    try:
        body = parsed_json(parsed, frames_path(rec))
    except Exception:  # as stored_json: the file is stored, its JSON made later
        return rec, None
    return rec, pack_stored(body)
