"""DICOM JSON (PS3.18 annex F.2) from catalog rows (QIDO-RS) and from stored files (WADO-RS metadata).

Rules kept here, where Orthanc and others have slipped: an empty value has no `Value` key; IS, DS and
the binary-number VRs are JSON numbers; PN is an object with `Alphabetic` (and `Ideographic`,
`Phonetic` when the file has them); pixel data is a BulkDataURI to its frames, never inlined megabytes.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any, BinaryIO

import orjson
import pydicom
from pydicom.datadict import tag_for_keyword

from medcloud.dicomweb.query import Level, QidoQuery, attribute_vr

__all__ = [
    "NATIVE_SYNTAXES", "MetadataCache", "StoredJsonCache", "element", "instance_metadata", "qido_result",
    "qido_results", "qido_results_json", "tag_hex",
]  # fmt: skip

NATIVE_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}
)
_NUMBER_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})

# What each level answers by default (PS3.18 table 10.6.3-3 and what OHIF v3 reads).
_DEFAULT: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
        "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyInstanceUID", "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances", "RetrieveURL",
    ),
    Level.SERIES: (
        "SpecificCharacterSet", "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
        "StudyInstanceUID", "NumberOfSeriesRelatedInstances", "SeriesDate", "BodyPartExamined", "RetrieveURL",
    ),
    Level.INSTANCE: (
        "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
        "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID", "AvailableTransferSyntaxUID", "RetrieveURL",
    ),
}  # fmt: skip


@functools.lru_cache(maxsize=8192)  # keywords come from the DICOM dictionary: a bounded set
def tag_hex(keyword: str) -> str:
    """The 8 upper-case hex digits of a keyword's tag, as DICOM JSON keys it."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return f"{tag:08X}"


def element(vr: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON attribute; None, "" and [] give no `Value` key (F.2.5)."""
    values = value if isinstance(value, list | tuple) else [value]
    values = [v for v in values if v is not None and v != ""]
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [v if isinstance(v, dict) else {"Alphabetic": str(v)} for v in values]}
    if vr in _NUMBER_VRS:
        return {"vr": vr, "Value": [_number(v) for v in values]}
    if vr == "DA":
        return {"vr": vr, "Value": [v.strftime("%Y%m%d") if isinstance(v, date) else str(v) for v in values]}
    return {"vr": vr, "Value": [str(v) for v in values]}


def _number(v: Any) -> int | float:
    if isinstance(v, int | float):
        return v
    text = str(v).strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def _level_values(level: Level, row: dict[str, Any], base: str) -> dict[str, Any]:
    """Every attribute the catalog holds for a row at `level`, by keyword (None: held empty)."""
    study_url = f"{base}/studies/{row['study_uid']}"
    out: dict[str, Any] = {
        "SpecificCharacterSet": "ISO_IR 192",  # the catalog holds Unicode; JSON is UTF-8 whatever the files said
        "StudyInstanceUID": row["study_uid"],
        "StudyDate": row.get("study_date"),
        "StudyTime": None,
        "AccessionNumber": None,
        "ReferringPhysicianName": None,
        "PatientName": row.get("patient_pseudonym"),
        "PatientID": row.get("patient_pseudonym"),
        "PatientBirthDate": None,
        "PatientSex": row.get("patient_sex"),
        "PatientAge": row.get("patient_age"),
        "StudyID": None,
        "StudyDescription": row.get("study_description", row.get("description")),
    }
    if level is Level.STUDY:
        out.update(
            ModalitiesInStudy=row.get("modalities", []),
            NumberOfStudyRelatedSeries=row.get("n_series"),
            NumberOfStudyRelatedInstances=row.get("n_instances"),
            RetrieveURL=study_url,
        )
        return out
    series_url = f"{study_url}/series/{row['series_uid']}"
    out.update(
        SeriesInstanceUID=row["series_uid"],
        Modality=row.get("modality"),
        SeriesDescription=row.get("series_description"),
        SeriesNumber=row.get("series_number"),
        BodyPartExamined=row.get("body_part"),
        SeriesDate=None,
    )
    if level is Level.SERIES:
        out.update(NumberOfSeriesRelatedInstances=row.get("n_instances"), RetrieveURL=series_url)
        return out
    out.update(
        SOPClassUID=row.get("sop_class_uid"),
        SOPInstanceUID=row["sop_uid"],
        InstanceNumber=row.get("instance_number"),
        Rows=row.get("rows"),
        Columns=row.get("columns"),
        NumberOfFrames=row.get("frames"),
        AvailableTransferSyntaxUID=row.get("transfer_syntax"),
        RetrieveURL=f"{series_url}/instances/{row['sop_uid']}",
    )
    return out


def qido_result(query: QidoQuery, row: dict[str, Any], base: str) -> dict[str, Any]:
    """One QIDO-RS match as a DICOM JSON dataset: the level's defaults, includefield, or all held."""
    return qido_results(query, [row], base)[0]


def qido_results(query: QidoQuery, rows: Iterable[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """QIDO-RS matches as DICOM JSON datasets. Which attributes are answered, their tags, VRs and order
    depend on the query only, so they are worked out once for the page rather than once per row."""
    out: list[dict[str, Any]] = []
    columns: list[tuple[str, str, str, Callable[[str, Any], dict[str, Any]]]] | None = None
    for row in rows:
        held = _level_values(query.level, row, base)
        if columns is None:
            columns = [(tag, vr, kw, _ELEMENT_BY_VR.get(vr, element)) for tag, vr, kw in _columns(query, tuple(held))]
        out.append({tag: convert(vr, held.get(keyword)) for tag, vr, keyword, convert in columns})
    return out


def qido_results_json(query: QidoQuery, rows: Iterable[dict[str, Any]], base: str) -> bytes:
    """`qido_results` as the UTF-8 JSON a response carries, written by orjson: the same text as
    `json.dumps(..., ensure_ascii=False, separators=(",", ":"))` writes of it (a test holds them equal), in
    a tenth of the time. (The catalog's numbers are integers: no NaN, which orjson would write as null.)"""
    return json_bytes(qido_results(query, rows, base))


def json_bytes(body: Any) -> bytes:
    """DICOM JSON of strings, integers, lists and dicts as UTF-8 bytes, written by orjson: the text
    `json.dumps(..., ensure_ascii=False, separators=(",", ":"))` writes of it (tests hold them equal), in a
    tenth of the time. Not for floats (orjson writes NaN as null where json.dumps refuses it)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # what orjson refuses (an integer beyond 64 bits): json.dumps writes it, or refuses it likewise
        return _dumps(body).encode()


_dumps = functools.partial(json.dumps, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _scalar(convert: Callable[[Any], Any]) -> Callable[[str, Any], dict[str, Any]]:
    """`element` for one VR: a single value (the usual case of a catalog column) is converted without the
    list handling; anything else goes through `element` itself, so both give the same JSON."""

    def one(vr: str, value: Any) -> dict[str, Any]:
        if value is None or value == "":
            return {"vr": vr}
        if isinstance(value, list | tuple | dict):
            return element(vr, value)
        return {"vr": vr, "Value": [convert(value)]}

    return one


_ELEMENT_BY_VR: dict[str, Callable[[str, Any], dict[str, Any]]] = {
    "PN": _scalar(lambda v: {"Alphabetic": str(v)}),
    "DA": _scalar(lambda v: v.strftime("%Y%m%d") if isinstance(v, date) else str(v)),
    **{vr: _scalar(_number) for vr in _NUMBER_VRS},
    **{vr: _scalar(str) for vr in ("CS", "UI", "LO", "SH", "UR", "TM", "AS", "LT", "ST", "UT", "DT", "AE")},
}


def _columns(query: QidoQuery, held: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(tag, VR, keyword) of every attribute a result carries, in tag order, each once."""
    wanted: Iterable[str] = held if query.include_all else (*_DEFAULT[query.level], *sorted(query.include))
    by_tag: dict[str, tuple[str, str, str]] = {}
    for keyword in wanted:
        if query.level is Level.STUDY and keyword == "Modality":
            continue  # OHIF asks for 00080060 at study level: ModalitiesInStudy answers it
        tag = tag_hex(keyword)
        by_tag[tag] = (tag, attribute_vr(keyword), keyword)
    return [by_tag[tag] for tag in sorted(by_tag)]


def instance_metadata(fh: BinaryIO, pixel_uri: str | None) -> dict[str, Any]:
    """A stored file's dataset as DICOM JSON; its pixel data is a BulkDataURI to the frames.

    Other binary values are inlined (base64): PS3.18 allows either, and they are small next to pixels.
    With `pixel_uri` None (frames that cannot be served) the pixel data element is left out rather than
    pointed nowhere.
    """
    attrs, pixel_vr = _dataset_json(fh)
    return _with_pixels(attrs, pixel_vr, pixel_uri)


def _dataset_json(fh: BinaryIO) -> tuple[dict[str, Any], str]:
    ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
    out: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=2**62, suppress_invalid_tags=True)
    _fix_numbers(out)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    syntax = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", ""))
    return out, "OW" if syntax in NATIVE_SYNTAXES and bits > 8 else "OB"


def _with_pixels(attrs: dict[str, Any], pixel_vr: str, pixel_uri: str | None) -> dict[str, Any]:
    if pixel_uri is None:
        return attrs
    return {**attrs, "7FE00010": {"vr": pixel_vr, "BulkDataURI": pixel_uri}}


class MetadataCache:
    """DICOM JSON of stored files by SHA-256, least recently used dropped first.

    Blobs are content-addressed, so an entry never goes stale; pydicom's conversion costs ~6 ms per CT
    image, which a viewer opening a series pays on every visit without this. Entries are shared and
    must not be mutated (callers get a fresh top-level dict).
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def metadata(self, sha256: str, open_blob: Callable[[], BinaryIO], pixel_uri: str | None) -> dict[str, Any]:
        """The file's DICOM JSON, converted on first use."""
        with self._lock:
            hit = self._entries.get(sha256)
            if hit is not None:
                self._entries.move_to_end(sha256)
        if hit is None:
            with open_blob() as fh:
                hit = _dataset_json(fh)
            with self._lock:
                self._entries[sha256] = hit
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return _with_pixels(hit[0], hit[1], pixel_uri)


class StoredJsonCache:
    """Stored DICOM JSON of files by SHA-256, unsealed and inflated, least recently used dropped first,
    at most `max_bytes` in all.

    Each body is held as `formats.dicomjson.bulk_split` pieces, ready to be joined with a request's base.
    Blobs are content-addressed, so an entry never goes stale. Reading a 100-instance series' metadata
    otherwise fetches, unseals and inflates 100 stored bodies on every visit, which was most of that
    request's time. Callers consult it only for rows whose access they have checked (like MetadataCache);
    what it holds is the de-identified metadata the catalog serves, in this process's memory only.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._entries: OrderedDict[str, tuple[bytes, ...]] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes
        self._lock = threading.Lock()

    def get_many(self, shas: Iterable[str]) -> dict[str, tuple[bytes, ...]]:
        out: dict[str, tuple[bytes, ...]] = {}
        with self._lock:
            for sha in shas:
                hit = self._entries.get(sha)
                if hit is not None:
                    self._entries.move_to_end(sha)
                    out[sha] = hit
        return out

    def put(self, sha256: str, pieces: tuple[bytes, ...]) -> None:
        size = sum(map(len, pieces))
        if size > self._max // 16:  # one huge dataset must not empty the cache
            return
        with self._lock:
            old = self._entries.pop(sha256, None)
            self._bytes += size - (sum(map(len, old)) if old is not None else 0)
            self._entries[sha256] = pieces
            while self._bytes > self._max:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= sum(map(len, dropped))


def _fix_numbers(attrs: dict[str, Any]) -> None:
    """pydicom keeps an IS/DS value it cannot read as a string; F.2.3.1 needs numbers, so drop such values."""
    for attr in attrs.values():
        vr = attr.get("vr")
        if vr in ("IS", "DS") and "Value" in attr:
            kept = [v for v in attr["Value"] if isinstance(v, int | float) or v is None]
            if kept:
                attr["Value"] = kept
            else:
                del attr["Value"]
        elif vr == "SQ" and "Value" in attr:
            for item in attr["Value"]:
                _fix_numbers(item)
