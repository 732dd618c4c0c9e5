"""Validate a DICOM Part 10 file and extract what the catalog indexes, without decoding pixels.

One reader for every size: files in memory are read as bytes, big files spooled to disk through a
read-only memory map, so neither is ever loaded whole and both get the same checks (structure to the
end, bounded nesting and inflation, the writer's final element) and build the record the same way.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TypeVar

from pydicom.uid import UID

from medcloud.errors import InvalidInput
from medcloud.formats.charset import charset_for
from medcloud.formats.dicom import (
    M_SOP_INSTANCE,
    M_TRANSFER_SYNTAX,
    MAX_INFLATED_BYTES,
    PIXEL_DATA,
    Buffer,
    ParsedDicom,
    Syntax,
    check_final_element,
    open_dicom,
    parse,
    scan_top_level,
    tag,
)
from medcloud.formats.records import DicomRecord

T = TypeVar("T")

__all__ = ["WANTED", "read_dicom", "read_opened", "read_parsed", "record_of"]

_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "Modality",
    "StudyDescription",
    "SeriesDescription",
    "PatientID",
    "PatientSex",
    "PatientAge",
    "PatientIdentityRemoved",
    "BodyPartExamined",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "NumberOfFrames",
    "Rows",
    "Columns",
)
_T = {keyword: tag(keyword) for keyword in _KEYWORDS}
_PIXEL_TAGS = (tag("FloatPixelData"), tag("DoubleFloatPixelData"), PIXEL_DATA)
# The top-level tags `record_of` reads (its `top` spans), for a walk that collects them.
WANTED = frozenset(_T.values()) | frozenset(_PIXEL_TAGS)


def read_dicom(
    source: bytes | Path, *, require_deidentified: bool = True, max_inflated: int = MAX_INFLATED_BYTES
) -> DicomRecord:
    """Parse a DICOM file (bytes in memory or a path) and return its catalog record.

    Raises InvalidInput for files that are malformed, truncated, nested too deep, inflate past
    `max_inflated` bytes, lack the identifying UIDs, or, when `require_deidentified`, do not declare
    PatientIdentityRemoved=YES.
    """
    return read_source(source, lambda data: _read(data, require_deidentified, max_inflated))


def read_source(source: bytes | Path, read: Callable[[bytes | mmap.mmap], T]) -> T:
    """`read` over a DICOM file's bytes: bytes as given, a path memory-mapped for the call (an empty
    file, or one the OS cannot read, is InvalidInput)."""
    if isinstance(source, bytes):
        return read(source)
    try:
        with open(source, "rb") as fh:
            if not fh.seek(0, 2):
                raise InvalidInput("empty DICOM file")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return read(mapped)
    except OSError as exc:
        raise InvalidInput(f"cannot read the DICOM file: {exc.strerror}") from None


def _date(text: str) -> date | None:
    if len(text) >= 8 and text[:8].isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None
    return None


def _read(data: Buffer, require_deidentified: bool, max_inflated: int) -> DicomRecord:
    # A deflated data set is inflated to a mapped temporary file: a small upload may claim up to the
    # upload limit, which the hub must not hold in memory (issue 10, item 3).
    buf, meta, syn, pos, _ = open_dicom(data, max_inflated=max_inflated, inflate_to_disk=True)
    top, last = scan_top_level(buf, pos, syn, WANTED)
    return record_of(buf, meta, syn, top, last, require_deidentified)


def read_parsed(
    data: Buffer, *, require_deidentified: bool = True, max_inflated: int = MAX_INFLATED_BYTES
) -> tuple[DicomRecord, ParsedDicom | None]:
    """`read_dicom` of bytes or a mapped file, and its full parse for a later reader (the DICOM JSON).

    The data set is split into elements once (`formats.dicom.parse`, which walks every sequence). When
    that strict walk fails, the record is read as `read_dicom` reads it (`scan_top_level`, which steps
    over short sequences) and no parse is returned; either way the record and the refusals are those
    of `read_dicom`: the top-level spans and the last tag that both walks give are the same.
    """
    buf, meta, syn, pos, _ = open_dicom(data, max_inflated=max_inflated, inflate_to_disk=True)
    return read_opened(buf, meta, syn, pos, require_deidentified)


def read_opened(
    buf: Buffer, meta: dict[int, bytes], syn: Syntax, pos: int, require_deidentified: bool
) -> tuple[DicomRecord, ParsedDicom | None]:
    """`read_parsed` of a file `open_dicom` has opened."""
    try:
        elems, _ = parse(buf, pos, len(buf), syn, in_item=False)
    except Exception:  # the lenient walk below gives the refusal, or reads the file
        top, last = scan_top_level(buf, pos, syn, WANTED)
        return record_of(buf, meta, syn, top, last, require_deidentified), None
    top = {el.tag: (el.vstart, el.vend) for el in elems if el.tag in WANTED}  # the last of a tag wins
    record = record_of(buf, meta, syn, top, elems[-1].tag if elems else -1, require_deidentified)
    return record, ParsedDicom(buf, meta, syn, elems)


def record_of(
    buf: Buffer,
    meta: dict[int, bytes],
    syn: Syntax,
    top: dict[int, tuple[int, int]],
    last: int,
    require_deidentified: bool,
) -> DicomRecord:
    """The catalog record of a data set from its top-level value spans and last tag (or InvalidInput)."""
    check_final_element(meta, last)

    def raw(keyword: str) -> bytes:
        span = top.get(_T[keyword])
        return buf[span[0] : span[1]].rstrip(b" \x00") if span is not None else b""

    charset = charset_for(raw("SpecificCharacterSet"))

    def text(keyword: str) -> str:
        value = raw(keyword)
        return charset.decode(value).strip() if value else ""

    def ascii_(keyword: str) -> str:
        return raw(keyword).decode("ascii", errors="replace").strip()

    def integer(keyword: str) -> int | None:
        value = ascii_(keyword).split("\\")[0].strip()
        try:
            return int(value) if value else None
        except ValueError:
            return None

    def us(keyword: str) -> int | None:
        span = top.get(_T[keyword])
        if span is None or span[1] - span[0] < 2:
            return None
        return int(syn.u16.unpack_from(buf, span[0])[0])

    rows = us("Rows")
    _check_pixels(ascii_("SOPClassUID"), rows is not None, not top.keys().isdisjoint(_PIXEL_TAGS))
    sop_uid, study_uid, series_uid = ascii_("SOPInstanceUID"), ascii_("StudyInstanceUID"), ascii_("SeriesInstanceUID")
    _check_identity(sop_uid, study_uid, series_uid, ascii_("PatientIdentityRemoved"), require_deidentified)
    media_sop = meta.get(M_SOP_INSTANCE, b"").rstrip(b" \x00").decode("ascii", errors="replace")
    if media_sop and media_sop != sop_uid:
        raise InvalidInput("MediaStorageSOPInstanceUID does not match SOPInstanceUID")
    return DicomRecord(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=ascii_("SOPClassUID"),
        patient_pseudonym=text("PatientID") or "UNKNOWN",
        patient_sex=ascii_("PatientSex") or None,
        patient_age=ascii_("PatientAge") or None,
        study_date=_date(ascii_("StudyDate")),
        study_description=text("StudyDescription"),
        modality=ascii_("Modality").upper(),
        body_part=text("BodyPartExamined"),
        series_description=text("SeriesDescription"),
        series_number=integer("SeriesNumber"),
        instance_number=integer("InstanceNumber"),
        rows=rows,
        columns=us("Columns"),
        frames=integer("NumberOfFrames"),
        transfer_syntax=meta.get(M_TRANSFER_SYNTAX, b"").rstrip(b" \x00").decode("ascii", errors="replace"),
    )


def _check_pixels(sop_class: str, has_rows: bool, has_pixels: bool) -> None:
    """A file cut exactly between two elements parses cleanly; an image without pixels gives it away."""
    if has_pixels:
        return
    if has_rows:
        raise InvalidInput("truncated DICOM file: image attributes present but no pixel data")
    if sop_class and "Image Storage" in UID(sop_class).name:
        raise InvalidInput(f"truncated DICOM file: a {UID(sop_class).name} object without pixel data")


def _check_identity(sop_uid: str, study_uid: str, series_uid: str, removed: str, require_deidentified: bool) -> None:
    missing = [k for k, v in (("SOPInstanceUID", sop_uid), ("StudyInstanceUID", study_uid),
                              ("SeriesInstanceUID", series_uid)) if not v]  # fmt: skip
    if missing:
        raise InvalidInput(f"DICOM file lacks {', '.join(missing)}")
    if require_deidentified and removed.upper() != "YES":
        raise InvalidInput(
            "DICOM file is not de-identified (PatientIdentityRemoved is not YES): send it through a gateway"
        )
