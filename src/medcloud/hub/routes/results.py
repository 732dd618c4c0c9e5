"""AI results back as DICOM: `POST /api/v1/results` stores boxes as SR or masks as SEG beside the source study."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medcloud.hub.deps import client_address, hub_state, record_audit, require
from medcloud.results.model import Box, FindingCode, MaskInput, ResultSpec, finding_code
from medcloud.results.service import MAX_BOXES, MAX_SOURCES, ResultRequest, store_result
from medcloud.security.policy import Permission, Principal

router = APIRouter(tags=["results"])
_UID = r"^[0-9]+(\.[0-9]+)*$"


class CodeIn(BaseModel):
    value: str = Field(min_length=1, max_length=64)
    scheme: str = Field(min_length=1, max_length=16, description='e.g. "SCT", "DCM", "99LOCAL"')
    meaning: str | None = Field(None, max_length=64)


class BoxIn(BaseModel):
    x: float = Field(description="Left edge, pixels from the image's left")
    y: float = Field(description="Top edge, pixels from the image's top")
    w: float
    h: float
    label: str = Field(min_length=1, max_length=64)
    score: float | None = Field(None, description="Detection score in [0, 1]")
    code: CodeIn | None = None
    sop_uid: str | None = Field(None, pattern=_UID, max_length=64, description="Needed when there are several sources")
    frame: int | None = Field(None, ge=1, description="1-based frame of a multi-frame source")


class MaskIn(BaseModel):
    sop_uid: str | None = Field(None, pattern=_UID, max_length=64)
    png: str | None = Field(None, description="A PNG, base64: non-zero is inside (binary) or 0-255 (fractional)")
    rle: dict[str, Any] | None = Field(None, description='COCO uncompressed RLE: {"size": [h, w], "counts": [...]}')


class ResultIn(BaseModel):
    kind: Literal["boxes", "mask"]
    sources: list[str] = Field(min_length=1, max_length=MAX_SOURCES, description="Source SOP Instance UIDs")
    algorithm: str = Field(min_length=1, max_length=64)
    algorithm_version: str = Field(min_length=1, max_length=64)
    boxes: list[BoxIn] = Field([], max_length=MAX_BOXES)
    masks: list[MaskIn] = Field([], max_length=MAX_SOURCES)
    label: str = Field("", max_length=64, description="The segment's label (masks)")
    code: CodeIn | None = Field(None, description="The segment's coded property type (masks)")
    fractional: bool = Field(False, description="Masks are probabilities (SEG FRACTIONAL) instead of binary")
    series_description: str = Field("", max_length=64)


def _coded(label: str, code: CodeIn | None) -> FindingCode | None:
    return finding_code(label, code.model_dump()) if code else None


def _request(body: ResultIn) -> ResultRequest:
    spec = ResultSpec(
        algorithm=body.algorithm,
        version=body.algorithm_version,
        series_description=body.series_description,
        label=body.label,
        code=_coded(body.label or "finding", body.code),
        fractional=body.fractional,
    )
    boxes = [Box(b.x, b.y, b.w, b.h, b.label, b.score, _coded(b.label, b.code), b.sop_uid, b.frame) for b in body.boxes]
    masks = [MaskInput(m.sop_uid, m.png, m.rle) for m in body.masks]
    return ResultRequest(body.kind, list(body.sources), spec, boxes, masks)


@router.post("/api/v1/results", status_code=201, summary="Store an AI result as DICOM SR (boxes) or SEG (mask)")
async def create_result(
    request: Request, body: ResultIn, principal: Principal = Depends(require(Permission.RESULTS_WRITE))
) -> JSONResponse:
    request.state.audit_action = "results.create"
    state = hub_state(request)
    result = await run_in_threadpool(
        lambda: store_result(
            _request(body),
            catalog=state.catalog,
            blobs=state.blobs,
            ingestor=state.ingestor,
            projects=principal.readable_projects(),
            subject=principal.subject,
            client=client_address(request),
            uid_root=state.settings.uid_root,
        )
    )
    out = result.as_dict()
    await run_in_threadpool(
        record_audit, request, principal, action="results.create", resource=f"instance/{result.sop_uid}",
        outcome="stored", detail={"kind": body.kind, "algorithm": body.algorithm, "version": body.algorithm_version,
                                  "study": result.study_uid, "sources": len(body.sources), "project": result.project},
    )  # fmt: skip
    return JSONResponse(out, status_code=201)
