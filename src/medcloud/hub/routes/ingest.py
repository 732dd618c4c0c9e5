"""POST /api/v1/ingest: a site uploads one de-identified file (raw body, streamed to disk while hashed)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from medcloud.errors import Forbidden, InvalidInput, TooLarge
from medcloud.hub.deps import client_address, hub_state, require
from medcloud.security.policy import Permission, Principal

router = APIRouter(tags=["ingest"])
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


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
    limit = state.settings.max_upload_bytes
    request.state.audit_action = "ingest"
    if principal.site is None:
        raise Forbidden("only a site token may upload")
    claimed_site = request.headers.get("x-medcloud-site")
    if claimed_site and claimed_site != principal.site:
        raise Forbidden(f"this token uploads as site '{principal.site}', not '{claimed_site}'")
    project = _project_for(principal, request.headers.get("x-medcloud-project"))
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"upload of {declared} bytes exceeds the limit of {limit} bytes")
    expected = request.headers.get("x-content-sha256")
    if expected is not None and not _HEX64.match(expected):
        raise InvalidInput("X-Content-SHA256 must be 64 hex digits")
    filename = request.headers.get("x-medcloud-filename", "")
    upload = state.blobs.spool(limit)
    try:
        async for chunk in request.stream():
            upload.write(chunk)
    except BaseException:
        upload.discard()
        raise
    if declared and declared.isdigit() and int(declared) != upload.size:
        upload.discard()
        raise InvalidInput(f"truncated upload: Content-Length {declared}, received {upload.size} bytes")
    result = await run_in_threadpool(
        state.ingestor.ingest,
        upload,
        site=principal.site,
        project=project,
        subject=principal.subject,
        client=client_address(request),
        filename=filename,
        expected_sha256=expected,
    )
    return JSONResponse(result.as_dict(), status_code=201 if result.status == "stored" else 200)
