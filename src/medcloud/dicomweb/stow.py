"""STOW-RS (PS3.18 section 10.5): parts of a multipart request through the ingest pipeline, and the
response dataset (ReferencedSOPSequence, FailedSOPSequence with PS3.4 failure reasons).
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from medcloud.dicomweb.json import element
from medcloud.dicomweb.multipart import Part
from medcloud.errors import InvalidInput, MedcloudError, StorageError, TooLarge, UnsupportedFormat
from medcloud.formats.dicom import T_SERIES_UID, T_SOP_CLASS, T_SOP_INSTANCE, T_STUDY_UID, open_dicom, scan_top_level
from medcloud.formats.sniff import sniff
from medcloud.ingest.pipeline import Ingestor, UploadItem
from medcloud.store import LocalBlobStore, MemoryBudget, SpooledUpload

__all__ = [
    "CANNOT_UNDERSTAND",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SOP_CLASS_MISMATCH",
    "StowOutcome",
    "failure_reason",
    "store_parts",
]  # fmt: skip

# PS3.4 Annex GG.4 / PS3.18 table 10.5.3-3 failure reasons.
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
_WANTED = frozenset({T_SOP_CLASS, T_SOP_INSTANCE, T_STUDY_UID, T_SERIES_UID})
_LAST_WANTED = max(_WANTED)
_CHUNK = 1024 * 1024


def failure_reason(error: MedcloudError) -> int:
    """The PS3.4 failure reason for one of our refusals."""
    if isinstance(error, StorageError | TooLarge):
        return OUT_OF_RESOURCES
    if isinstance(error, UnsupportedFormat):
        return CANNOT_UNDERSTAND
    if isinstance(error, InvalidInput):
        # The ingest reader's words for an image object without pixel data (cut short or incomplete).
        if "without pixel data" in error.detail or "but no pixel data" in error.detail:
            return SOP_CLASS_MISMATCH
        if "de-identified" in error.detail:
            return PROCESSING_FAILURE
        return CANNOT_UNDERSTAND
    return PROCESSING_FAILURE  # conflicts (UID in use) and anything else refused on purpose


@dataclass
class _Entry:
    part: Part
    sop_class: str = ""
    sop_instance: str = ""
    study: str = ""
    series: str = ""
    item: UploadItem | None = None
    reason: int | None = None
    detail: str = ""
    refusal: str = ""  # "status:slug" of a part refused before the pipeline saw it
    identified: bool = False  # its UIDs were read by `_identify` (else taken from the ingest record)
    copied: bool = False  # its bytes were received whole (a part refused on its type or size was not)


@dataclass
class StowOutcome:
    """The HTTP status and DICOM JSON body of a STOW-RS answer."""

    status: int
    body: dict[str, Any]
    refused_early: list[dict[str, Any]] = field(default_factory=list)  # audit events to record


def _identify(entry: _Entry, data: bytes | mmap.mmap) -> None:
    """Read the UIDs the response names (and the study to check); a file we cannot read keeps none."""
    with contextlib.suppress(Exception):  # the pipeline gives unreadable files their own clear refusal
        buf, _, syn, pos, _ = open_dicom(data, max_inflated=64 * 1024**2)
        # The four UIDs come early: the walk stops after the last of them, unless one is missing (then
        # the whole top level is walked, as before). A file naming its study twice is still stored only
        # if the study the ingest reader finds is the one asked for (`UploadItem.study_uid`).
        top, _ = scan_top_level(buf, pos, syn, _WANTED, stop_after=_LAST_WANTED)
        if len(top) < len(_WANTED):
            top, _ = scan_top_level(buf, pos, syn, _WANTED)

        def uid(tag: int) -> str:
            span = top.get(tag)
            return bytes(buf[span[0] : span[1]]).rstrip(b" \x00").decode("ascii", "replace") if span else ""

        entry.sop_class, entry.sop_instance = uid(T_SOP_CLASS), uid(T_SOP_INSTANCE)
        entry.study, entry.series = uid(T_STUDY_UID), uid(T_SERIES_UID)


def _identify_upload(entry: _Entry, upload: SpooledUpload) -> None:
    entry.identified = True
    upload.finish(fsync=False)  # a spilled part is flushed to read it; the pipeline's batch sync covers it
    data = upload.data()
    if data is not None:
        _identify(entry, data)
        return
    with open(upload.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        _identify(entry, mapped)


def _name_of(entry: _Entry, upload: SpooledUpload) -> str:
    """The name of a part the pipeline refused, in its audit event: its SOP Instance UID if readable."""
    if not entry.identified:
        with contextlib.suppress(OSError, MedcloudError):  # its bytes are still held while the pipeline runs
            _identify_upload(entry, upload)
        entry.identified = True
    return entry.sop_instance or "stow-part"


def _copy(entry: _Entry, upload: SpooledUpload) -> None:
    """The part's bytes into `upload` (held in memory within the request's budget, else spilled)."""
    view = entry.part.data
    for start in range(0, len(view), _CHUNK):
        upload.write(bytes(view[start : start + _CHUNK]))
    entry.copied = True


def _identify_part(entry: _Entry, blobs: LocalBlobStore, max_part: int, budget: MemoryBudget) -> None:
    """`_identify` a part after the pipeline refused it (its upload is gone: it is copied again)."""
    upload = blobs.spool(max_part, budget)
    try:
        with contextlib.suppress(MedcloudError):  # a part that cannot be copied again keeps no UIDs
            _copy(entry, upload)
            _identify_upload(entry, upload)
    finally:
        upload.discard()


def store_parts(
    ingestor: Ingestor,
    blobs: LocalBlobStore,
    parts: Sequence[Part],
    *,
    site: str,
    project: str,
    subject: str,
    client: str,
    study_uid: str | None,
    max_part: int,
    memory: int,
    base: str,
    max_files: int,
) -> StowOutcome:
    """Store every part through the ingest pipeline (one group commit) and build the STOW-RS answer.

    Parts are copied into spooled uploads: held in memory up to `memory` bytes in all, spilled to disk
    beyond, so that the caller may release a mapped request body as soon as this returns.
    """
    if len(parts) > max_files:
        raise InvalidInput(f"a request holds at most {max_files} instances")
    entries = [_Entry(p) for p in parts]
    items: list[UploadItem] = []
    budget = MemoryBudget(memory)
    for e in entries:
        ctype = e.part.headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
        if ctype != "application/dicom":
            e.reason, e.detail = CANNOT_UNDERSTAND, f"a part of type {ctype!r} is not application/dicom"
            e.refusal = "415:unsupported-format"
            continue
        upload = blobs.spool(max_part, budget)
        try:
            _copy(e, upload)
            if study_uid is not None:  # the study is checked before anything is stored
                _identify_upload(e, upload)
        except MedcloudError as exc:
            upload.discard()
            e.reason, e.detail = failure_reason(exc), exc.detail
            e.refusal = f"{exc.status}:{exc.type_slug}"
            continue
        except BaseException:
            upload.discard()
            raise
        if sniff(bytes(e.part.data[:132])) != "dicom":
            # The ingest pipeline also takes JPEG, PNG and TIFF; STOW-RS stores DICOM only.
            if not e.identified:
                _identify_upload(e, upload)
            upload.discard()
            e.reason, e.detail = CANNOT_UNDERSTAND, "not a DICOM Part 10 file"
            e.refusal = "415:unsupported-format"
            continue
        if study_uid is not None and e.study != study_uid:
            upload.discard()
            if e.study:
                e.reason, e.detail = PROCESSING_FAILURE, f"instance of study {e.study}, not of {study_uid}"
                e.refusal = "409:study-mismatch"
            else:  # unreadable: it cannot be shown to belong to the study, so it is not stored into it
                e.reason, e.detail = CANNOT_UNDERSTAND, "no StudyInstanceUID could be read from this part"
                e.refusal = "400:invalid-input"
            continue
        if e.identified:
            e.item = UploadItem(upload, e.sop_instance or "stow-part", study_uid=study_uid)
        else:  # read only if the pipeline refuses it: a stored part is named by its ingest record
            e.item = UploadItem(upload, study_uid=study_uid, name_of=partial(_name_of, e, upload))
        items.append(e.item)
    if items:
        ingestor.ingest_many(items, site=site, project=project, subject=subject, client=client)
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    studies: set[str] = set()
    for e in entries:
        if e.item is not None and e.item.result is not None:
            res = e.item.result
            record = e.item.dicom_record
            if not e.identified and record is not None:  # what was stored, as the ingest reader read it
                e.sop_class, e.sop_instance, e.series = record.sop_class_uid, record.sop_uid, record.series_uid
            sop_uid = res.sop_instance_uid or e.sop_instance
            studies.add(res.study_instance_uid or e.study)
            url = f"{base}/studies/{res.study_instance_uid}/series/{e.series}/instances/{sop_uid}"
            referenced.append({
                "00081150": element("UI", e.sop_class),
                "00081155": element("UI", sop_uid),
                "00081190": element("UR", url if e.series else f"{base}/studies/{res.study_instance_uid}"),
            })  # fmt: skip
            continue
        if e.item is not None and e.item.error is not None:
            e.reason, e.detail = failure_reason(e.item.error), e.item.error.detail
        if e.copied and not e.identified:  # a refused part is named by what can be read of it
            _identify_part(e, blobs, max_part, budget)
        failed.append({
            "00081150": element("UI", e.sop_class),
            "00081155": element("UI", e.sop_instance),
            "00081197": element("US", e.reason if e.reason is not None else PROCESSING_FAILURE),
        })  # fmt: skip
    body: dict[str, Any] = {}
    if len(studies) == 1:
        body["00081190"] = element("UR", f"{base}/studies/{next(iter(studies))}")
    body["00081199"] = {"vr": "SQ", "Value": referenced} if referenced else {"vr": "SQ"}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else 202 if referenced else 409
    early = [
        {
            "subject": subject,
            "action": "dicomweb.store",
            "resource": f"instance/{e.sop_instance}" if e.sop_instance else f"upload/stow-part-{index}",
            "outcome": f"refused:{e.refusal}",
            "client": client,
            "detail": {"reason": e.detail[:300], "project": project, "failure_reason": e.reason},
        }
        for index, e in enumerate(entries)
        if e.refusal
    ]
    return StowOutcome(status, body, early)
