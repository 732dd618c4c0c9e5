"""Whole-slide images as tiles: SVS images and DICOM WSI series, DeepZoom and native tiles, thumbnails.

Audit: opening a slide (`GET /slides/{id}`) and each thumbnail write one event; tiles write one
`slide.tiles` event per caller and slide per five minutes (a viewer fetches hundreds per minute), so
the trail says who read which slide when without one row per tile.
"""

from __future__ import annotations

import atexit
import re
import threading
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from medcloud.errors import InvalidInput
from medcloud.hub.deps import MAX_SQL_INT, hub_state, mark_audited_read, record_audit, require
from medcloud.security.policy import Permission, Principal
from medcloud.store.slides import SlideRow, SlideRows
from medcloud.wsi.readers import Blob
from medcloud.wsi.service import MAX_THUMBNAIL, SlideService, SlideSource, parse_slide_id

router = APIRouter(tags=["slides"])

MAX_SLIDES_PAGE = 200
_DZ_TILE = re.compile(r"^([0-9]{1,6})_([0-9]{1,6})\.(jpeg|jpg|png)$")
_MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}
_LOCK = threading.Lock()


def slide_service(request: Request) -> SlideService:
    """The app's slide service, made on first use (it holds open slides between requests)."""
    app_state = request.app.state
    service: SlideService | None = getattr(app_state, "slides", None)
    if service is None:
        with _LOCK:
            service = getattr(app_state, "slides", None)
            if service is None:
                state = hub_state(request)
                blobs = state.blobs

                def open_blob(sha256: str) -> Blob:
                    path: Path | None = blobs.plain_path(sha256)  # None: packed or encrypted at rest
                    return path if path is not None else blobs.open(sha256)

                service = SlideService(open_blob, scratch=state.settings.data_dir / "cache" / "wsi")
                atexit.register(service.clear)  # scratch copies of packed DICOM instances go with the process
                app_state.slides = service
    return service


def _source(row: SlideRow) -> SlideSource:
    sid = parse_slide_id(f"{'svs' if row.kind == 'svs' else 'dcm'}-{row.key}")
    extra: dict[str, Any] = {"site": row.site, "name": row.name}
    extra["image_id" if row.kind == "svs" else "series_uid"] = int(row.key) if row.kind == "svs" else row.key
    return SlideSource(sid, row.project, row.study_uid, row.blobs, extra)


async def _lookup(request: Request, principal: Principal, slide_id: str) -> SlideSource:
    sid = parse_slide_id(slide_id)
    rows = SlideRows(hub_state(request).catalog.db)
    row = await run_in_threadpool(rows.get, sid.kind, sid.key, principal.readable_projects())
    return _source(row)


def _audit(request: Request, principal: Principal, action: str, source: SlideSource, **detail: Any) -> None:
    record_audit(request, principal, action=action, resource=f"slide/{source.slide_id}", outcome="ok",
                 detail={"project": source.project, "blobs": list(source.blobs), **detail})  # fmt: skip


@router.get("/api/v1/slides", summary="Whole-slide images (SVS and DICOM WSI) in granted projects")
async def list_slides(
    request: Request,
    project: str | None = Query(None, description="Project name"),
    limit: int = Query(50, ge=1, le=MAX_SLIDES_PAGE),
    offset: int = Query(0, ge=0, le=MAX_SQL_INT),
    principal: Principal = Depends(require(Permission.CATALOG_READ)),
) -> dict[str, Any]:
    if project:
        principal.require_project(project)
    rows = SlideRows(hub_state(request).catalog.db)
    found, total = await run_in_threadpool(rows.find, principal.readable_projects(), project, limit, offset)
    service = slide_service(request)
    slides = await run_in_threadpool(service.sources_levels, [_source(r) for r in found])
    return {"slides": slides, "total": total, "limit": limit, "offset": offset}


@router.get("/api/v1/slides/{slide_id}", summary="One slide: size, levels, pixel size, DeepZoom address")
async def get_slide(
    request: Request, slide_id: str, principal: Principal = Depends(require(Permission.CATALOG_READ))
) -> dict[str, Any]:
    mark_audited_read(request, "slide.open", f"slide/{slide_id[:80]}")
    source = await _lookup(request, principal, slide_id)
    info = await run_in_threadpool(slide_service(request).info, source)
    await run_in_threadpool(_audit, request, principal, "slide.open", source)
    return info


@router.get("/api/v1/slides/{slide_id}/thumbnail", summary="A JPEG of the whole slide (audited)")
async def get_thumbnail(
    request: Request,
    slide_id: str,
    max: int = Query(256, ge=1, le=MAX_THUMBNAIL, description="Longest side in pixels"),
    principal: Principal = Depends(require(Permission.BYTES_READ)),
) -> Response:
    mark_audited_read(request, "slide.thumbnail", f"slide/{slide_id[:80]}")
    source = await _lookup(request, principal, slide_id)
    data = await run_in_threadpool(slide_service(request).thumbnail, source, max)
    await run_in_threadpool(_audit, request, principal, "slide.thumbnail", source, max=max)
    return Response(data, media_type="image/jpeg")


async def _tile_audit(request: Request, principal: Principal, source: SlideSource, where: str) -> None:
    if slide_service(request).first_read_in_window(principal.subject, str(source.slide_id)):
        await run_in_threadpool(_audit, request, principal, "slide.tiles", source, first_tile=where)


@router.get("/api/v1/slides/{slide_id}/dzi/{level}/{tile}", summary="A DeepZoom tile (col_row.jpeg or .png)")
async def get_dz_tile(
    request: Request,
    slide_id: str,
    level: int,
    tile: str,
    principal: Principal = Depends(require(Permission.BYTES_READ)),
) -> Response:
    mark_audited_read(request, "slide.tiles", f"slide/{slide_id[:80]}")
    m = _DZ_TILE.match(tile)
    if m is None:
        raise InvalidInput("a DeepZoom tile is {col}_{row}.jpeg or {col}_{row}.png")
    col, row = int(m.group(1)), int(m.group(2))
    fmt: Literal["jpeg", "png"] = "png" if m.group(3) == "png" else "jpeg"
    source = await _lookup(request, principal, slide_id)
    data = await run_in_threadpool(slide_service(request).dz_tile, source, level, col, row, fmt)
    await _tile_audit(request, principal, source, f"dzi/{level}/{col}_{row}")
    return Response(data, media_type=_MEDIA[fmt])


@router.get("/api/v1/slides/{slide_id}/levels/{level}/tiles/{x}/{y}", summary="A 512x512 tile of a native level")
async def get_native_tile(
    request: Request,
    slide_id: str,
    level: int,
    x: int,
    y: int,
    format: Literal["jpeg", "png"] = Query("jpeg"),
    principal: Principal = Depends(require(Permission.BYTES_READ)),
) -> Response:
    mark_audited_read(request, "slide.tiles", f"slide/{slide_id[:80]}")
    source = await _lookup(request, principal, slide_id)
    data = await run_in_threadpool(slide_service(request).native_tile, source, level, x, y, format)
    await _tile_audit(request, principal, source, f"levels/{level}/tiles/{x}/{y}")
    return Response(data, media_type=_MEDIA[format])
