"""Researcher queries: studies, series, instances and non-DICOM images, and their bytes (audited)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from medcloud.errors import InvalidInput
from medcloud.hub.deps import MAX_SQL_INT, audited_download, hub_state, mark_audited_read, require
from medcloud.security.policy import Permission, Principal
from medcloud.store import MAX_PAGE, Filters

router = APIRouter(tags=["catalog"])


def filters(
    site: str | None = Query(None, description="Site name"),
    project: str | None = Query(None, description="Project name"),
    modality: str | None = Query(None, description="DICOM modality, e.g. CT"),
    date_from: date | None = Query(None, description="Study date from (YYYY-MM-DD)"),
    date_to: date | None = Query(None, description="Study date to (YYYY-MM-DD)"),
    patient: str | None = Query(None, description="Patient pseudonym"),
    q: str | None = Query(None, max_length=200, description="Text in study or series description"),
    body_part: str | None = Query(None, max_length=64, description="Body Part Examined, e.g. CHEST"),
    sex: str | None = Query(None, pattern="^[MFOmfo]$", description="Patient's Sex: M, F or O"),
    age_min: int | None = Query(None, ge=0, le=200, description="Patient's Age from (whole years)"),
    age_max: int | None = Query(None, ge=0, le=200, description="Patient's Age to (whole years)"),
    finding: list[str] = Query(
        [], max_length=20, description="Report finding code[:status], '-' negates, e.g. pneumothorax:present"
    ),
) -> Filters:
    if date_from and date_to and date_from > date_to:
        raise InvalidInput("date_from is after date_to")
    if age_min is not None and age_max is not None and age_min > age_max:
        raise InvalidInput("age_min is above age_max")
    from medcloud.hub.routes.reports import parse_findings

    return Filters(
        site=site,
        project=project,
        modality=modality,
        date_from=date_from,
        date_to=date_to,
        patient=patient,
        text=q,
        findings=parse_findings(finding),
        body_part=body_part,
        sex=sex,
        age_min=age_min,
        age_max=age_max,
    )


Limit = Query(100, ge=1, le=MAX_PAGE)
ImageId = Annotated[int, Path(ge=0, le=MAX_SQL_INT)]
Offset = Query(0, ge=0, le=MAX_SQL_INT)


def _page(items: list[dict[str, Any]], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": limit, "offset": offset}


def _check_project(principal: Principal, f: Filters) -> None:
    if f.project:
        principal.require_project(f.project)


@router.get("/api/v1/studies", summary="Find studies")
async def list_studies(
    request: Request,
    f: Filters = Depends(filters),
    limit: int = Limit,
    offset: int = Offset,
    principal: Principal = Depends(require(Permission.CATALOG_READ)),
) -> dict[str, Any]:
    _check_project(principal, f)
    cat = hub_state(request).catalog
    items, total = await run_in_threadpool(cat.query.find_studies, f, principal.readable_projects(), limit, offset)
    return _page(items, total, limit, offset)


@router.get("/api/v1/studies/{study_uid}", summary="One study with its series")
async def get_study(
    request: Request, study_uid: str, principal: Principal = Depends(require(Permission.CATALOG_READ))
) -> dict[str, Any]:
    return await run_in_threadpool(hub_state(request).catalog.query.get_study, study_uid, principal.readable_projects())


@router.get("/api/v1/instances", summary="Find DICOM instances")
async def list_instances(
    request: Request,
    f: Filters = Depends(filters),
    study: str | None = Query(None, description="Study Instance UID"),
    series: str | None = Query(None, description="Series Instance UID"),
    limit: int = Limit,
    offset: int = Offset,
    principal: Principal = Depends(require(Permission.CATALOG_READ)),
) -> dict[str, Any]:
    _check_project(principal, f)
    f = Filters(**{**f.__dict__, "study_uid": study, "series_uid": series})
    cat = hub_state(request).catalog
    items, total = await run_in_threadpool(cat.query.find_instances, f, principal.readable_projects(), limit, offset)
    return _page(items, total, limit, offset)


@router.get("/api/v1/instances/{sop_uid}", summary="One instance's metadata")
async def get_instance(
    request: Request, sop_uid: str, principal: Principal = Depends(require(Permission.CATALOG_READ))
) -> dict[str, Any]:
    query = hub_state(request).catalog.query
    return await run_in_threadpool(query.get_instance, sop_uid, principal.readable_projects())


@router.get("/api/v1/instances/{sop_uid}/file", summary="An instance's DICOM bytes (audited)")
async def get_instance_file(
    request: Request, sop_uid: str, principal: Principal = Depends(require(Permission.BYTES_READ))
) -> StreamingResponse:
    mark_audited_read(request, "instance.read", f"instance/{sop_uid}")
    query = hub_state(request).catalog.query
    inst = await run_in_threadpool(query.get_instance, sop_uid, principal.readable_projects())
    return await audited_download(
        request, principal, inst["sha256"], action="instance.read", resource=f"instance/{sop_uid}",
        media_type="application/dicom", filename=f"{sop_uid}.dcm",
        detail={"sha256": inst["sha256"], "project": inst["project"]},
    )  # fmt: skip


@router.get("/api/v1/images", summary="Find non-DICOM images")
async def list_images(
    request: Request,
    site: str | None = None,
    project: str | None = None,
    media_type: str | None = None,
    received_from: date | None = None,
    received_to: date | None = None,
    q: str | None = Query(None, max_length=200, description="Text in the file name"),
    limit: int = Limit,
    offset: int = Offset,
    principal: Principal = Depends(require(Permission.CATALOG_READ)),
) -> dict[str, Any]:
    f = Filters(site=site, project=project, media_type=media_type, date_from=received_from, date_to=received_to, text=q)
    _check_project(principal, f)
    cat = hub_state(request).catalog
    items, total = await run_in_threadpool(cat.query.find_images, f, principal.readable_projects(), limit, offset)
    return _page(items, total, limit, offset)


@router.get("/api/v1/images/{image_id}", summary="One image's metadata")
async def get_image(
    request: Request, image_id: ImageId, principal: Principal = Depends(require(Permission.CATALOG_READ))
) -> dict[str, Any]:
    return await run_in_threadpool(hub_state(request).catalog.query.get_image, image_id, principal.readable_projects())


@router.get("/api/v1/images/{image_id}/file", summary="An image's bytes (audited)")
async def get_image_file(
    request: Request, image_id: ImageId, principal: Principal = Depends(require(Permission.BYTES_READ))
) -> StreamingResponse:
    mark_audited_read(request, "image.read", f"image/{image_id}")
    img = await run_in_threadpool(hub_state(request).catalog.query.get_image, image_id, principal.readable_projects())
    ext = {"image/jpeg": "jpg", "image/png": "png", "image/tiff": "tif"}.get(img["media_type"], "bin")
    return await audited_download(
        request, principal, img["sha256"], action="image.read", resource=f"image/{image_id}",
        media_type=img["media_type"], filename=f"image-{image_id}.{ext}",
        detail={"sha256": img["sha256"], "project": img["project"]},
    )  # fmt: skip
