"""Validate a DICOM Part 10 file and extract what the catalog indexes, without decoding pixels."""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path
from typing import Any

from medcloud.errors import InvalidInput
from medcloud.formats.records import DicomRecord

UNDEFINED_LENGTH = 0xFFFFFFFF
DEFLATED = "1.2.840.10008.1.2.1.99"


def _text(ds: object, keyword: str) -> str:
    value = getattr(ds, keyword, None)
    if value is None:
        return ""
    return str(value).strip()


def _int(ds: object, keyword: str) -> int | None:
    value = getattr(ds, keyword, None)
    if value in (None, ""):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _date(text: str) -> date | None:
    if len(text) >= 8 and text[:8].isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None
    return None


_T = {
    "SpecificCharacterSet": 0x00080005,
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyDate": 0x00080020,
    "Modality": 0x00080060,
    "StudyDescription": 0x00081030,
    "SeriesDescription": 0x0008103E,
    "PatientID": 0x00100020,
    "PatientSex": 0x00100040,
    "PatientAge": 0x00101010,
    "PatientIdentityRemoved": 0x00120062,
    "BodyPartExamined": 0x00180015,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "SeriesNumber": 0x00200011,
    "InstanceNumber": 0x00200013,
    "NumberOfFrames": 0x00280008,
    "Rows": 0x00280010,
    "Columns": 0x00280011,
}
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)


def read_dicom(source: bytes | Path, *, require_deidentified: bool = True) -> DicomRecord:
    """Parse a DICOM file (bytes in memory or a path) and return its catalog record.

    Raises InvalidInput for files that are malformed, truncated, lack the identifying UIDs, or, when
    `require_deidentified`, do not declare PatientIdentityRemoved=YES. Files in memory go through the
    byte-level reader the de-identifier uses (every element walked, nothing decoded that is not
    needed); big files spooled to disk go through pydicom, which reads them lazily.
    """
    if isinstance(source, bytes):
        return _read_in_memory(source, require_deidentified)
    return _read_with_pydicom(source, require_deidentified)


_WANTED = frozenset(_T.values()) | frozenset(_PIXEL_TAGS)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def scan_top_level(buf: bytes, pos: int, syn: Any) -> dict[int, tuple[int, int]]:
    """Walk a dataset's top-level elements and return {tag: (value start, value end)} for `_WANTED`.

    Every element's length is checked against the bytes present, so a file cut anywhere fails: a cut
    inside a defined-length element (sequences included) overruns the buffer. Defined-length sequences
    are stepped over, not walked item by item (the de-identifier at the site walks every item). From
    the first undefined-length element on (a sequence or encapsulated pixel data), the rest is walked in
    full by the de-identifier's parser, which finds the delimiters.
    """
    from medcloud.deid.dicom import parse

    n = len(buf)
    found: dict[int, tuple[int, int]] = {}
    explicit = syn.explicit
    hdr2, hdr_implicit, u32 = syn.hdr2, syn.hdr_implicit, syn.u32
    while pos < n:
        if pos + 8 > n:
            if not any(buf[pos:n]):  # trailing padding shorter than a header
                break
            raise InvalidInput(f"truncated or malformed DICOM: element header at byte {pos}")
        if explicit:
            g, e, vr, length = hdr2.unpack_from(buf, pos)
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    raise InvalidInput(f"truncated or malformed DICOM: element header at byte {pos}")
                length = u32.unpack_from(buf, pos + 8)[0]
                vstart = pos + 12
            elif vr.isalpha() and vr.isupper():
                vstart = pos + 8
            else:
                raise InvalidInput(f"truncated or malformed DICOM: invalid VR {vr!r} in ({g:04X},{e:04X})")
        else:
            g, e, length = hdr_implicit.unpack_from(buf, pos)
            vstart = pos + 8
        if length == UNDEFINED_LENGTH or g == 0xFFFE:
            rest, _ = parse(buf, pos, n, syn, in_item=False)
            for el in rest:
                if el.tag in _WANTED:
                    found[el.tag] = (el.vstart, el.vend)
            break
        vend = vstart + length
        if vend > n:
            raise InvalidInput(f"truncated or malformed DICOM: value of ({g:04X},{e:04X}) needs {length} bytes")
        tag = (g << 16) | e
        if tag in _WANTED:
            found[tag] = (vstart, vend)
        pos = vend
    return found


def _read_in_memory(data: bytes, require_deidentified: bool) -> DicomRecord:
    from medcloud.deid.dicom import open_dicom
    from medcloud.deid.text import charset_for

    buf, meta, syn, pos, _ = open_dicom(data)
    top = scan_top_level(buf, pos, syn)

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
    _check_pixels(ascii_("SOPClassUID"), rows is not None, any(t in top for t in _PIXEL_TAGS))
    sop_uid, study_uid, series_uid = ascii_("SOPInstanceUID"), ascii_("StudyInstanceUID"), ascii_("SeriesInstanceUID")
    _check_identity(sop_uid, study_uid, series_uid, ascii_("PatientIdentityRemoved"), require_deidentified)
    media_sop = meta.get(0x00020003, b"").rstrip(b" \x00").decode("ascii", errors="replace")
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
        transfer_syntax=meta.get(0x00020010, b"").rstrip(b" \x00").decode("ascii", errors="replace"),
    )


def _check_pixels(sop_class: str, has_rows: bool, has_pixels: bool) -> None:
    """A file cut exactly between two elements parses cleanly; an image without pixels gives it away."""
    if has_pixels:
        return
    if has_rows:
        raise InvalidInput("truncated DICOM file: image attributes present but no pixel data")
    from pydicom.uid import UID

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


def _read_with_pydicom(source: Path, require_deidentified: bool) -> DicomRecord:
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.errors import InvalidDicomError

    size = source.stat().st_size
    fp = str(source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Values over 1 KB (pixel data, big private blobs) are skipped, not read: only their offsets
            # and lengths are needed to prove the file is complete.
            ds = pydicom.dcmread(fp, defer_size=1024)
        except InvalidDicomError as exc:
            raise InvalidInput(f"not a valid DICOM file: {exc}") from None
        except (EOFError, ValueError, KeyError, TypeError, OSError) as exc:
            raise InvalidInput(f"malformed DICOM file: {exc}") from None
    for w in caught:
        text = str(w.message)
        if "End of file" in text or "EOF" in text or "ended prematurely" in text:
            raise InvalidInput("truncated DICOM file: the data set ends before its declared length")
    meta = getattr(ds, "file_meta", None)
    deflated = meta is not None and str(meta.get("TransferSyntaxUID", "")) == DEFLATED
    # Offsets in a deflated data set count in the inflated stream, not in the file: no length check there.
    for tag in [] if deflated else ds.keys():  # keys, not the Dataset: iterating it decodes every element
        elem = ds.get_item(tag, keep_deferred=True)
        length = getattr(elem, "length", None)
        tell = getattr(elem, "value_tell", None)
        if not isinstance(elem, RawDataElement) or length is None or tell is None:
            continue  # already decoded by pydicom (e.g. the character set): read in full
        if length != UNDEFINED_LENGTH and tell + length > size:
            raise InvalidInput(
                f"truncated DICOM file: element {tag} needs {length} bytes at offset {tell}, the file has {size}"
            )
    pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    _check_pixels(_text(ds, "SOPClassUID"), "Rows" in ds, pixels)
    try:
        sop_uid = _text(ds, "SOPInstanceUID")
        study_uid = _text(ds, "StudyInstanceUID")
        series_uid = _text(ds, "SeriesInstanceUID")
        _check_identity(sop_uid, study_uid, series_uid, _text(ds, "PatientIdentityRemoved"), require_deidentified)
        tsyntax = ""
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            tsyntax = _text(meta, "TransferSyntaxUID")
            media_sop = _text(meta, "MediaStorageSOPInstanceUID")
            if media_sop and media_sop != sop_uid:
                raise InvalidInput("MediaStorageSOPInstanceUID does not match SOPInstanceUID")
        return DicomRecord(
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            sop_class_uid=_text(ds, "SOPClassUID"),
            patient_pseudonym=_text(ds, "PatientID") or "UNKNOWN",
            patient_sex=_text(ds, "PatientSex") or None,
            patient_age=_text(ds, "PatientAge") or None,
            study_date=_date(_text(ds, "StudyDate")),
            study_description=_text(ds, "StudyDescription"),
            modality=_text(ds, "Modality").upper(),
            body_part=_text(ds, "BodyPartExamined"),
            series_description=_text(ds, "SeriesDescription"),
            series_number=_int(ds, "SeriesNumber"),
            instance_number=_int(ds, "InstanceNumber"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            frames=_int(ds, "NumberOfFrames"),
            transfer_syntax=tsyntax,
        )
    except InvalidInput:
        raise
    except Exception as exc:  # a value pydicom cannot convert is bad input, not a server fault
        raise InvalidInput(f"malformed DICOM attribute: {exc}") from None
