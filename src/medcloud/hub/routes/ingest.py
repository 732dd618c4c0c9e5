"""Uploads from sites: one file per request (raw body), or many per request (multipart, group commit).

Bodies are hashed as they stream in, held in memory while small (a batch request holds at most
`batch_memory_bytes`) and spilled to disk when large; nothing is parsed until the bytes are complete.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from medcloud.errors import Forbidden, InvalidInput, TooLarge
from medcloud.hub import multipart
from medcloud.hub.deps import client_address, hub_state, require
from medcloud.hub.problems import problem_body
from medcloud.ingest.pipeline import UploadItem, expected_digest
from medcloud.security.policy import Permission, Principal

router = APIRouter(tags=["ingest"])


def _upload_scope(request: Request, principal: Principal) -> tuple[str, str]:
    """The site (from the token, never the request) and project an upload goes to."""
    if principal.site is None:
        raise Forbidden("only a site token may upload")
    claimed_site = request.headers.get("x-medcloud-site")
    if claimed_site and claimed_site != principal.site:
        raise Forbidden(f"this token uploads as site '{principal.site}', not '{claimed_site}'")
    return principal.site, _project_for(principal, request.headers.get("x-medcloud-project"))


def _content_length(request: Request) -> int | None:
    """The declared body length, or None when absent or not a number (chunked bodies)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


def _project_for(principal: Principal, requested: str | None) -> str:
    if requested:
        if requested not in principal.projects:
            raise Forbidden(f"this site token may not upload into project '{requested}'")
        return requested
    if len(principal.projects) == 1:
        return next(iter(principal.projects))
    raise InvalidInput("this token has several projects: name one in X-Medcloud-Project")


@router.post(
    "/api/v1/ingest",
    status_code=201,
    summary="Upload one de-identified DICOM or image file",
    responses={200: {"description": "Identical content was already stored (idempotent replay)"}},
)
async def ingest(request: Request, principal: Principal = Depends(require(Permission.INGEST))) -> JSONResponse:
    state = hub_state(request)
    request.state.audit_action = "ingest"
    site, project = _upload_scope(request, principal)
    expected = expected_digest(request.headers.get("x-content-sha256"))
    upload = await state.ingestor.receive(
        request.stream(), max_bytes=state.settings.max_upload_bytes, declared=_content_length(request)
    )
    result = await run_in_threadpool(
        state.ingestor.ingest,
        upload,
        site=site,
        project=project,
        subject=principal.subject,
        client=client_address(request),
        filename=request.headers.get("x-medcloud-filename", ""),
        expected_sha256=expected,
    )
    return JSONResponse(result.as_dict(), status_code=201 if result.status == "stored" else 200)


@router.post(
    "/api/v1/ingest/batch",
    summary="Upload many de-identified files in one multipart/related request (group commit)",
)
async def ingest_batch(request: Request, principal: Principal = Depends(require(Permission.INGEST))) -> JSONResponse:
    started = time.perf_counter()
    state = hub_state(request)
    settings = state.settings
    request.state.audit_action = "ingest.batch"
    site, project = _upload_scope(request, principal)
    boundary = multipart.boundary_of(request.headers.get("content-type", ""))
    declared = _content_length(request)
    if declared is not None and declared > settings.max_batch_bytes:
        raise TooLarge(f"batch of {declared} bytes exceeds the limit of {settings.max_batch_bytes} bytes")
    reception = state.ingestor.batch_reception(
        max_file_bytes=settings.max_upload_bytes,
        max_files=settings.max_batch_files,
        memory_bytes=settings.batch_memory_bytes,
    )
    with reception:
        await multipart.read_parts(
            request.stream(),
            boundary,
            reception,
            limit=settings.max_batch_bytes,
            declared=declared,
            whole_below=settings.batch_memory_bytes,
        )
    if not reception.items:
        raise InvalidInput("the batch holds no files")
    received = time.perf_counter()
    phases: dict[str, float] = {"receive": received - started}
    await run_in_threadpool(
        partial(state.ingestor.ingest_many, timings=phases),
        reception.items,
        site=site,
        project=project,
        subject=principal.subject,
        client=client_address(request),
    )
    phases = {"receive": phases.pop("receive"), "store": time.perf_counter() - received, **phases}
    return JSONResponse(_batch_reply(reception.items), headers={"Server-Timing": _server_timing(phases)})


def _batch_reply(items: list[UploadItem]) -> dict[str, Any]:
    """Each file's outcome in order, and counts per outcome."""
    out: list[dict[str, Any]] = []
    counts = {"stored": 0, "duplicate": 0, "failed": 0}
    for index, item in enumerate(items):
        if item.result is not None:
            counts[item.result.status] += 1
            out.append({"index": index, **item.result.as_dict()})
        else:
            assert item.error is not None
            counts["failed"] += 1
            out.append({"index": index, "status": "failed", "filename": item.filename,
                        "problem": problem_body(item.error)})  # fmt: skip
    return {"items": out, **counts}


def _server_timing(phases: dict[str, float]) -> str:
    """Server-Timing (W3C): where a request's time went, for operators and benchmarks."""
    return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in phases.items())
