"""DICOMweb rendered images and thumbnails (PS3.18 8.3.5, 10.4) at /dicom-web: JPEG or PNG from stored pixels.

The same tokens, grants and audit as the other WADO-RS routes (their helpers are reused): a reader sees
only its projects' studies, every answer is audited (`dicomweb.rendered`, `dicomweb.thumbnail`) after the
bytes are found and before the image is sent. Rendering lives in `medcloud.dicomweb.render`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from medcloud.dicomweb.codecs import can_decode
from medcloud.dicomweb.frames import NotTranscodable, parse_frame_list
from medcloud.dicomweb.json import NATIVE_SYNTAXES
from medcloud.dicomweb.media import NotAcceptable
from medcloud.dicomweb.multipart import closing, new_boundary, part_header
from medcloud.dicomweb.render import RenderCache, render_frame
from medcloud.dicomweb.render_params import RenderSpec, parse_render_query
from medcloud.errors import InvalidInput, MedcloudError, NotFound
from medcloud.hub.deps import hub_state, mark_audited_read
from medcloud.hub.openapi import media
from medcloud.hub.routes.dicomweb import _METHODS, BytesReader, _audit_read, _base, _covered, _not_allowed, _resource
from medcloud.security.policy import Principal

router = APIRouter(prefix="/dicom-web", tags=["dicomweb"])
# A rendering is one JPEG or PNG, or several in multipart/related (see render_params.OFFERS).
_RENDER_DOC = media("image/jpeg", "image/png", "multipart/related")
log = logging.getLogger(__name__)
# Rendered images by content hash, frame and rendering: a study browser's page of thumbnails comes back
# from memory (blobs are immutable, so entries never go stale; access is checked on every request).
RENDERED = RenderCache(max_bytes=64 << 20)
MAX_RENDERED_PARTS = 2000

_INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"


def _images(rows: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    """The instances of `rows` that can be rendered: with pixel data in a syntax decoded here."""
    images = [r for r in rows if r["rows"] is not None]
    if not images:
        raise NotAcceptable(f"{what} holds no image (no pixel data): nothing can be rendered")
    syntaxes = {r["transfer_syntax"] for r in images}
    stuck = {ts for ts in syntaxes if ts not in NATIVE_SYNTAXES and not can_decode(ts)}
    decodable = [r for r in images if r["transfer_syntax"] not in stuck]
    if not decodable:
        raise NotTranscodable(f"{what} holds pixel data in {', '.join(sorted(stuck))}, which cannot be decoded here")
    return decodable


def _representative(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The middle image of the series with the most images (a CT's volume rather than its scout)."""
    by_series: dict[str, list[dict[str, Any]]] = {}
    for r in _images(rows, "this resource"):
        by_series.setdefault(r["series_uid"], []).append(r)
    chosen = max(by_series.values(), key=len)  # max keeps the first of equals: the catalog's series order
    return chosen[len(chosen) // 2]


def _frame_count(r: dict[str, Any]) -> int:
    return int(r["frames"] or 1)


def _check_frame(r: dict[str, Any], n: int) -> None:
    if n > _frame_count(r):
        raise NotFound(f"frame {n} does not exist (the instance has {_frame_count(r)})")


def _render(request: Request, r: dict[str, Any], frame: int, spec: RenderSpec) -> bytes:
    """One frame rendered, from the cache when it was rendered so before."""
    key = (r["sha256"], frame, spec.key())
    cached = RENDERED.get(key)
    if cached is not None:
        return cached
    with hub_state(request).blobs.open(r["sha256"]) as fh:
        data = render_frame(fh, frame, spec)
    RENDERED.put(key, data)
    return data


def _headers(spec: RenderSpec) -> dict[str, str]:
    if not spec.ignored:
        return {}
    return {"Warning": f'299 medcloud "ignored query parameters: {", ".join(spec.ignored)}"'}


async def _one(request: Request, principal: Principal, action: str, rows: list[dict[str, Any]], r: dict[str, Any],
               frame: int, spec: RenderSpec, resource: str) -> Response:  # fmt: skip
    """Render one frame, audit the read, answer the image (or a one-part multipart/related)."""
    _check_frame(r, frame)
    data = await run_in_threadpool(_render, request, r, frame, spec)
    await _audit_read(request, principal, action, [r], resource, sop=r["sop_uid"], frame=frame,
                      media=spec.media_type)  # fmt: skip
    if not spec.multipart:
        return Response(data, media_type=spec.media_type, headers=_headers(spec))
    boundary = new_boundary()
    body = part_header(boundary, spec.media_type, []) + data + closing(boundary)
    return Response(body, media_type=f'multipart/related; type="{spec.media_type}"; boundary={boundary}',
                    headers=_headers(spec))  # fmt: skip


async def _many(request: Request, principal: Principal, action: str, items: list[tuple[dict[str, Any], int]],
                spec: RenderSpec, resource: str) -> Response:  # fmt: skip
    """Several frames rendered as multipart/related, one part each, rendered while they are sent."""
    if len(items) > MAX_RENDERED_PARTS:
        raise InvalidInput(f"{len(items)} images to render: at most {MAX_RENDERED_PARTS} per request")
    if not spec.multipart:
        raise NotAcceptable(f'{len(items)} images: accept multipart/related; type="{spec.media_type}" '
                            "or ask for one instance, frame or thumbnail")  # fmt: skip
    for r, n in items:
        _check_frame(r, n)
    rows = list({r["sop_uid"]: r for r, _ in items}.values())
    await _audit_read(request, principal, action, rows, resource, media=spec.media_type)
    boundary = new_boundary()
    base = _base(request)

    def body() -> Iterator[bytes]:
        for r, n in items:
            try:
                data = _render(request, r, n, spec)
            except MedcloudError as exc:  # one image that cannot be rendered does not end the others
                log.warning("not rendered: %s frame %d: %s", r["sop_uid"], n, exc.detail)
                continue
            location = f"{base}/studies/{r['study_uid']}/series/{r['series_uid']}/instances/{r['sop_uid']}"
            yield part_header(boundary, spec.media_type, [("Content-Location", f"{location}/frames/{n}/rendered")])
            yield data
        yield closing(boundary)

    media = f'multipart/related; type="{spec.media_type}"; boundary={boundary}'
    return StreamingResponse(body(), media_type=media, headers=_headers(spec))


async def _rendered(request: Request, principal: Principal, study: str, series: str | None = None,
                    instance: str | None = None, frames: str | None = None) -> Response:  # fmt: skip
    action = "dicomweb.rendered"
    resource = _resource(study, series, instance) + (f"/frames/{frames[:100]}" if frames else "")
    mark_audited_read(request, action, resource)
    numbers = parse_frame_list(frames) if frames is not None else [1]
    many = instance is None or len(numbers) > 1
    spec = parse_render_query(request.query_params.multi_items(), request.headers.get("accept"), many=many)
    rows = await _covered(request, principal, action, study, series, instance)
    mark_audited_read(request, action, resource)
    images = _images(rows, "this " + ("instance" if instance else "series" if series else "study"))
    if instance is None:
        items = [(r, 1) for r in images]
        if len(items) == 1 and not spec.multipart:
            return await _one(request, principal, action, rows, items[0][0], 1, spec, resource)
        return await _many(request, principal, action, items, spec, resource)
    if len(numbers) == 1:
        return await _one(request, principal, action, rows, images[0], numbers[0], spec, resource)
    return await _many(request, principal, action, [(images[0], n) for n in numbers], spec, resource)


async def _thumbnail(request: Request, principal: Principal, study: str, series: str | None = None,
                     instance: str | None = None, frame: str | None = None) -> Response:  # fmt: skip
    action = "dicomweb.thumbnail"
    resource = _resource(study, series, instance) + (f"/frames/{frame[:100]}" if frame else "")
    mark_audited_read(request, action, resource)
    numbers = parse_frame_list(frame) if frame is not None else []
    if len(numbers) > 1:
        raise InvalidInput("a thumbnail is of one frame")
    spec = parse_render_query(request.query_params.multi_items(), request.headers.get("accept"), thumbnail=True)
    rows = await _covered(request, principal, action, study, series, instance)
    mark_audited_read(request, action, resource)
    r = _representative(rows)
    n = numbers[0] if numbers else (_frame_count(r) + 1) // 2  # the middle frame of a multi-frame image
    return await _one(request, principal, action, rows, r, n, spec, resource)


@router.get(
    "/studies/{study}/rendered",
    response_class=Response,
    responses=_RENDER_DOC,
    summary="WADO-RS: a study rendered (multipart/related JPEG or PNG)",
)
async def study_rendered(request: Request, study: str, principal: Principal = BytesReader) -> Response:
    return await _rendered(request, principal, study)


@router.get(
    "/studies/{study}/series/{series}/rendered",
    response_class=Response,
    responses=_RENDER_DOC,
    summary="WADO-RS: a series rendered",
)
async def series_rendered(request: Request, study: str, series: str, principal: Principal = BytesReader) -> Response:
    return await _rendered(request, principal, study, series)


@router.get(
    f"{_INSTANCE}/rendered",
    response_class=Response,
    responses=_RENDER_DOC,
    summary="WADO-RS: an instance rendered (JPEG or PNG; its first frame)",
)
async def instance_rendered(
    request: Request, study: str, series: str, instance: str, principal: Principal = BytesReader
) -> Response:
    return await _rendered(request, principal, study, series, instance)


@router.get(
    f"{_INSTANCE}/frames/{{frames}}/rendered",
    response_class=Response,
    responses=_RENDER_DOC,
    summary="WADO-RS: frames of an instance rendered",
)
async def frames_rendered(
    request: Request, study: str, series: str, instance: str, frames: str, principal: Principal = BytesReader
) -> Response:
    return await _rendered(request, principal, study, series, instance, frames)


@router.get(
    "/studies/{study}/thumbnail",
    response_class=Response,
    responses=_RENDER_DOC,
    summary="WADO-RS: a study's thumbnail (its main series' middle image)",
)
async def study_thumbnail(request: Request, study: str, principal: Principal = BytesReader) -> Response:
    return await _thumbnail(request, principal, study)


@router.get(
    "/studies/{study}/series/{series}/thumbnail",
    response_class=Response,
    responses=_RENDER_DOC,
    summary="WADO-RS: a series' thumbnail (its middle image)",
)
async def series_thumbnail(request: Request, study: str, series: str, principal: Principal = BytesReader) -> Response:
    return await _thumbnail(request, principal, study, series)


@router.get(
    f"{_INSTANCE}/thumbnail", response_class=Response, responses=_RENDER_DOC, summary="WADO-RS: an instance's thumbnail"
)
async def instance_thumbnail(
    request: Request, study: str, series: str, instance: str, principal: Principal = BytesReader
) -> Response:
    return await _thumbnail(request, principal, study, series, instance)


@router.get(
    f"{_INSTANCE}/frames/{{frames}}/thumbnail",
    response_class=Response,
    responses=_RENDER_DOC,
    summary="WADO-RS: a frame's thumbnail",
)
async def frame_thumbnail(
    request: Request, study: str, series: str, instance: str, frames: str, principal: Principal = BytesReader
) -> Response:
    return await _thumbnail(request, principal, study, series, instance, frames)


for _path in (
    "/studies/{study}/rendered",
    "/studies/{study}/series/{series}/rendered",
    f"{_INSTANCE}/rendered",
    f"{_INSTANCE}/frames/{{frames}}/rendered",
    "/studies/{study}/thumbnail",
    "/studies/{study}/series/{series}/thumbnail",
    f"{_INSTANCE}/thumbnail",
    f"{_INSTANCE}/frames/{{frames}}/thumbnail",
):
    router.add_api_route(_path, _not_allowed(("GET",)), methods=[m for m in _METHODS if m != "GET"],
                         include_in_schema=False)  # fmt: skip
