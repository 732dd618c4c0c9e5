"""Validate a DICOM Part 10 file and extract what the catalog indexes, without decoding pixels."""

from __future__ import annotations

import io
import warnings
from datetime import date
from pathlib import Path

from medcloud.errors import InvalidInput
from medcloud.store.catalog import DicomRecord

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


def read_dicom(source: bytes | Path, *, require_deidentified: bool = True) -> DicomRecord:
    """Parse a DICOM file (bytes in memory or a path) and return its catalog record.

    Raises InvalidInput for files that are malformed, truncated, lack the identifying UIDs, or, when
    `require_deidentified`, do not declare PatientIdentityRemoved=YES.
    """
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.errors import InvalidDicomError

    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    fp: io.BytesIO | str = io.BytesIO(source) if isinstance(source, bytes) else str(source)
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
    end: int | None = 0
    meta = getattr(ds, "file_meta", None)
    deflated = meta is not None and str(meta.get("TransferSyntaxUID", "")) == DEFLATED
    # Offsets in a deflated data set count in the inflated stream, not in the file: no length check there.
    for tag in [] if deflated else ds.keys():  # keys, not the Dataset: iterating it decodes every element
        elem = ds.get_item(tag, keep_deferred=True)
        length = getattr(elem, "length", None)
        tell = getattr(elem, "value_tell", None)
        if not isinstance(elem, RawDataElement) or length is None or tell is None:
            continue  # already decoded by pydicom (e.g. the character set): read in full
        if length == UNDEFINED_LENGTH:
            end = None  # its end is not known without walking it
            continue
        if tell + length > size:
            raise InvalidInput(
                f"truncated DICOM file: element {tag} needs {length} bytes at offset {tell}, the file has {size}"
            )
        if end is not None:
            end = max(end, tell + length)
    if not deflated and end is not None and 0 < end < size:
        # pydicom stops quietly at a partial element header; the bytes left over are the cut element.
        raise InvalidInput(f"truncated DICOM file: {size - end} stray bytes after the last complete element")
    if "Rows" in ds and not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InvalidInput("truncated DICOM file: image attributes present but no pixel data")
    try:
        sop_uid = _text(ds, "SOPInstanceUID")
        study_uid = _text(ds, "StudyInstanceUID")
        series_uid = _text(ds, "SeriesInstanceUID")
        missing = [k for k, v in (("SOPInstanceUID", sop_uid), ("StudyInstanceUID", study_uid),
                                  ("SeriesInstanceUID", series_uid)) if not v]  # fmt: skip
        if missing:
            raise InvalidInput(f"DICOM file lacks {', '.join(missing)}")
        if require_deidentified and _text(ds, "PatientIdentityRemoved").upper() != "YES":
            raise InvalidInput(
                "DICOM file is not de-identified (PatientIdentityRemoved is not YES): send it through a gateway"
            )
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
