"""POST /api/v1/inference: a clinician sends a smear photo and gets boxes, species, counts and the crop vote.

The image is not kept unless the caller asks with `?keep=true` (then it goes to the blob store, content
addressed, and its hash is returned and audited). Every inference is audited, refusals included.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from medcloud.errors import InvalidInput, TooLarge
from medcloud.hub.deps import hub_state, record_audit, require
from medcloud.security.policy import Permission, Principal

router = APIRouter(tags=["inference"])
MAX_IMAGE_BYTES = 25 * 1024 * 1024


async def _image_bytes(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"image of {declared} bytes exceeds the limit of {limit} bytes")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=5)
        part = form.get("image") or form.get("file")
        if part is None or isinstance(part, str):
            raise InvalidInput("multipart body needs an 'image' file part")
        data = await part.read()
    else:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"image exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
    if len(data) > limit:
        raise TooLarge(f"image exceeds the limit of {limit} bytes")
    return data


def _audit_as_inference(request: Request) -> None:
    # Runs before authentication, so refusals (401/403) are audited under the same action.
    request.state.audit_action = "inference.run"
    request.state.audit_resource = "model/gram-stain"


@router.post(
    "/api/v1/inference",
    summary="Detect Gram-stain organisms in one image (SYNTHETIC-trained model)",
    dependencies=[Depends(_audit_as_inference)],
)
async def run_inference(
    request: Request,
    keep: bool = Query(False, description="Keep the image in the blob store (default: discarded)."),
    threshold: float = Query(0.3, ge=0.05, le=0.95, description="Score threshold for returned boxes."),
    model: str = Query("gram-stain", pattern=r"^[A-Za-z0-9._-]{1,64}$"),
    version: str | None = Query(None, pattern=r"^[A-Za-z0-9._-]{1,64}$"),
    principal: Principal = Depends(require(Permission.INFER)),
) -> dict[str, Any]:
    from medcloud.vision.service import find_model, infer

    state = hub_state(request)
    found = find_model(state.settings.data_dir, model, version)
    request.state.audit_resource = f"model/{found.name}/{found.version}"
    limit = min(MAX_IMAGE_BYTES, state.settings.max_upload_bytes)
    data = await _image_bytes(request, limit)
    result = await run_in_threadpool(infer, found, data, threshold, limit)
    kept: dict[str, Any] | None = None
    if keep:
        blob = await run_in_threadpool(state.blobs.put_bytes, data)
        kept = {"sha256": blob.sha256, "bytes": len(data)}
    result["kept"] = kept is not None
    if kept:
        result["kept_blob"] = kept
    detail = {
        "counts": {c["code"]: c["count"] for c in result["counts"]},
        "verdict": result["verdict"]["code"] if result["verdict"] else None,
        "yeast": result.get("yeast") is not None,
        "boxes": len(result["detections"]),
        "kept": kept,
        "bytes": len(data),
        "latency_ms": result["latency_ms"],
    }
    await run_in_threadpool(
        record_audit,
        request,
        principal,
        action="inference.run",
        resource=f"model/{found.name}/{found.version}",
        outcome="ok",
        detail=detail,
    )
    return result
