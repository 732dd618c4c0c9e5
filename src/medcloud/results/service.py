"""The hub's side of a result: find the sources the caller may see, build SR or SEG, store it through ingest.

The result goes through `Ingestor.ingest` like any upload, under the source study's site and project, so
it gets a blob, catalog rows (visible to studies, QIDO and WADO) and an ingest audit event; a source
outside the caller's projects is not found (404), as in every catalog read.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from medcloud.errors import InvalidInput
from medcloud.ingest.pipeline import Ingestor
from medcloud.results.model import Box, MaskInput, ResultSpec, decode_mask
from medcloud.store import Catalog, LocalBlobStore

__all__ = ["ResultRequest", "StoredResult", "store_result"]

MAX_SOURCES = 1000
MAX_BOXES = 10_000


@dataclass
class ResultRequest:
    """A result to store: `kind` "boxes" (with `boxes`) or "mask" (with one `masks` entry per source)."""

    kind: str
    sources: list[str]
    spec: ResultSpec
    boxes: list[Box] = field(default_factory=list)
    masks: list[MaskInput] = field(default_factory=list)


@dataclass(frozen=True)
class StoredResult:
    kind: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    sha256: str
    size: int
    project: str
    site: str
    sources: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _load_sources(
    catalog: Catalog, blobs: LocalBlobStore, uids: Sequence[str], projects: frozenset[str] | None
) -> tuple[list[Dataset], dict[str, Any]]:
    """The source datasets (pixels not decoded) and the first one's catalog row; NotFound when any is unseen."""
    if not uids:
        raise InvalidInput("name at least one source instance")
    if len(uids) > MAX_SOURCES or len(set(uids)) != len(uids):
        raise InvalidInput(f"name 1-{MAX_SOURCES} distinct source instances")
    rows = [catalog.query.get_instance(uid, projects) for uid in uids]  # NotFound for unknown or unseen
    if len({(r["study_uid"], r["project"], r["site"]) for r in rows}) != 1:
        raise InvalidInput("the source instances belong to more than one study")
    datasets: list[Dataset] = []
    for row in rows:
        with blobs.open(row["sha256"]) as fh:  # the header only: neither SR nor SEG needs the source's pixels
            datasets.append(pydicom.dcmread(fh, stop_before_pixels=True))
    return datasets, rows[0]


def build(request: ResultRequest, sources: list[Dataset], uid_root: str | None) -> Dataset:
    """The SR or SEG of `request` over `sources` (the order of `request.sources`)."""
    from medcloud.results.dicom import build_seg, build_sr

    if request.kind == "boxes":
        if request.masks:
            raise InvalidInput("a boxes result carries no masks")
        if not request.boxes or len(request.boxes) > MAX_BOXES:
            raise InvalidInput(f"a boxes result needs 1-{MAX_BOXES} boxes")
        return build_sr(sources, request.boxes, request.spec, uid_root=uid_root)
    if request.kind == "mask":
        if request.boxes:
            raise InvalidInput("a mask result carries no boxes")
        by_uid = {m.sop_uid: m for m in request.masks}
        named = set(by_uid) - {None}
        # One source may go unnamed; several must each be named, and a name must be one of the sources.
        if len(request.masks) != len(sources) or ((len(sources) > 1 or named) and named != set(request.sources)):
            raise InvalidInput("a mask result needs one mask per source, each naming its source's 'sop_uid'")
        ordered = [by_uid.get(str(s.SOPInstanceUID), request.masks[0]) for s in sources]
        arrays = [
            decode_mask(m, rows=int(s.Rows), columns=int(s.Columns), fractional=request.spec.fractional)
            for m, s in zip(ordered, sources, strict=True)
        ]
        return build_seg(sources, arrays, request.spec, uid_root=uid_root)
    raise InvalidInput("kind must be 'boxes' or 'mask'")


def store_result(
    request: ResultRequest,
    *,
    catalog: Catalog,
    blobs: LocalBlobStore,
    ingestor: Ingestor,
    projects: frozenset[str] | None,
    subject: str,
    client: str = "",
    uid_root: str | None = None,
) -> StoredResult:
    """Build the result and ingest it beside its source study; returns the new UIDs and blob."""
    sources, row = _load_sources(catalog, blobs, request.sources, projects)
    try:
        derived = build(request, sources, uid_root)
    except (ValueError, TypeError, AttributeError) as exc:
        # highdicom checks the sources against the IOD (geometry, frames, attributes): its refusal is the
        # request's fault (a source that cannot carry this result), not the hub's.
        raise InvalidInput(f"cannot build the result over these sources: {str(exc)[:300]}") from None
    buf = io.BytesIO()
    derived.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    upload = blobs.spool(max(len(data), 1))
    try:
        upload.write(data)
    except BaseException:
        upload.discard()
        raise
    stored = ingestor.ingest(
        upload,
        site=row["site"],
        project=row["project"],
        subject=subject,
        client=client,
        filename=f"result-{request.kind}.dcm",
    )
    return StoredResult(
        kind=request.kind,
        study_uid=str(derived.StudyInstanceUID),
        series_uid=str(derived.SeriesInstanceUID),
        sop_uid=str(derived.SOPInstanceUID),
        sop_class_uid=str(derived.SOPClassUID),
        modality=str(derived.Modality),
        sha256=stored.sha256,
        size=stored.size,
        project=row["project"],
        site=row["site"],
        sources=list(request.sources),
    )
