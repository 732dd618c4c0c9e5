"""Jobs: submit a script against a dataset version, watch, cancel; the running job's own data and artefacts.

Researchers (`jobs.run`) submit, list, read and cancel jobs on dataset versions of their projects. A
running job holds a `job` token: it reads its own dataset version here (`/dataset/...`), uploads its own
artefacts and registers models from them, and nothing else anywhere in the API.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medcloud.errors import InvalidInput, TooLarge
from medcloud.hub.deps import (
    audited_download,
    authenticate,
    client_address,
    hub_state,
    mark_audited_read,
    record_audit,
    require,
    store_body,
)
from medcloud.jobs.service import JobService
from medcloud.security.policy import Permission, Principal, Role

router = APIRouter(tags=["jobs"])
_JOB = r"^[0-9a-f]{32}$"
_VERSION = r"^[0-9a-f]{64}$"
_ARTIFACT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
_lock = threading.Lock()


def service(request: Request) -> JobService:
    """The hub's job service, made on first use (its backend comes from the settings)."""
    state = hub_state(request)
    with _lock:
        if state.jobs is None:
            state.jobs = JobService(state.settings, state.catalog, state.blobs, state.verifier)
        svc: JobService = state.jobs
    return svc


def job_or_researcher(request: Request) -> Principal:
    """A researcher with `jobs.run`, or a job token (acting for its own job only; checked per route)."""
    principal = authenticate(request)
    principal.require(Permission.JOB_RUNTIME if principal.role is Role.JOB else Permission.JOBS_RUN)
    return principal


async def _read_body(request: Request, limit: int) -> bytes:
    if int(request.headers.get("content-length") or 0) > limit:
        raise TooLarge(f"at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/api/v1/jobs", summary="Submit a job: body is a zip of the code (see docs/jobs.md)")
async def submit(
    request: Request,
    dataset: str = Query(pattern=_VERSION, description="The frozen dataset version the job reads"),
    entrypoint: str = Query("main.py", max_length=255),
    name: str = Query("", max_length=100),
    arg: list[str] = Query(default_factory=list, description="Arguments to the entry point (repeat)"),
    num_cpus: float = Query(1.0, gt=0, le=256),
    num_gpus: float = Query(0.0, ge=0, le=64),
    timeout_s: int = Query(3600, ge=1),
    principal: Principal = Depends(require(Permission.JOBS_RUN)),
) -> JSONResponse:
    svc = service(request)
    code = await _read_body(request, svc.limits.max_bytes)
    job = await run_in_threadpool(
        lambda: svc.submit(
            principal, dataset_id=dataset, code=code, entrypoint=entrypoint, args=arg, name=name,
            num_cpus=num_cpus, num_gpus=num_gpus, timeout_s=timeout_s, client=client_address(request),
        )
    )  # fmt: skip
    return JSONResponse(job, status_code=201)


@router.get("/api/v1/jobs", summary="Jobs on dataset versions of granted projects, newest first")
async def list_jobs(
    request: Request,
    state: str | None = Query(None, pattern=r"^(queued|running|succeeded|failed|cancelled|timed_out)$"),
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(require(Permission.JOBS_RUN)),
) -> dict[str, Any]:
    cat = hub_state(request).catalog
    return {
        "items": await run_in_threadpool(cat.jobs.list_jobs, principal.readable_projects(), state=state, limit=limit)
    }


@router.get("/api/v1/jobs/{job_id}", summary="One job's state")
async def get_job(
    request: Request, job_id: str = Path(pattern=_JOB), principal: Principal = Depends(job_or_researcher)
) -> dict[str, Any]:
    return await run_in_threadpool(service(request).get, job_id, principal)


@router.get("/api/v1/jobs/{job_id}/logs", summary="The end of a job's output (text)")
async def get_logs(
    request: Request,
    job_id: str = Path(pattern=_JOB),
    max_bytes: int = Query(1024 * 1024, ge=1, le=16 * 1024 * 1024),
    principal: Principal = Depends(require(Permission.JOBS_RUN)),
) -> PlainTextResponse:
    text = await run_in_threadpool(service(request).logs, job_id, principal, max_bytes)
    return PlainTextResponse(text)


@router.post("/api/v1/jobs/{job_id}/cancel", summary="Stop a queued or running job (its processes are killed)")
async def cancel(
    request: Request,
    job_id: str = Path(pattern=_JOB),
    principal: Principal = Depends(require(Permission.JOBS_RUN)),
) -> dict[str, Any]:
    job = await run_in_threadpool(service(request).cancel, job_id, principal)
    await run_in_threadpool(
        record_audit, request, principal, action="job.cancel", resource=f"job/{job_id}", outcome=job["state"]
    )
    return job


@router.get("/api/v1/jobs/{job_id}/artifacts", summary="What a job wrote back")
async def list_artifacts(
    request: Request, job_id: str = Path(pattern=_JOB), principal: Principal = Depends(job_or_researcher)
) -> dict[str, Any]:
    svc = service(request)
    await run_in_threadpool(svc.get, job_id, principal)
    return {"items": await run_in_threadpool(svc.catalog.jobs.artifacts, job_id)}


@router.put("/api/v1/jobs/{job_id}/artifacts/{name}", summary="A running job uploads an artefact (size-capped)")
async def put_artifact(
    request: Request,
    job_id: str = Path(pattern=_JOB),
    name: str = Path(pattern=_ARTIFACT),
    principal: Principal = Depends(require(Permission.JOB_RUNTIME)),
) -> JSONResponse:
    svc = service(request)
    await run_in_threadpool(svc.running_job, job_id, principal)
    stored = await store_body(request, svc.blobs, svc.settings.jobs_max_artifact_bytes, "an artefact")
    cat = svc.catalog

    def record() -> bool:
        with cat.write() as conn:
            created = cat.jobs.add_artifact(conn, job_id, name, stored.sha256, stored.size)
            cat.audit.append(
                conn, subject=principal.subject, action="job.artifact", resource=f"job/{job_id}/artifacts/{name}",
                outcome="created" if created else "unchanged", client=client_address(request),
                detail={"sha256": stored.sha256, "size": stored.size},
            )  # fmt: skip
        return created

    created = await run_in_threadpool(record)
    body = {"name": name, "sha256": stored.sha256, "size": stored.size}
    return JSONResponse(body, status_code=201 if created else 200)


@router.get("/api/v1/jobs/{job_id}/artifacts/{name}", summary="Download an artefact (audited)")
async def get_artifact(
    request: Request,
    job_id: str = Path(pattern=_JOB),
    name: str = Path(pattern=_ARTIFACT),
    principal: Principal = Depends(job_or_researcher),
) -> StreamingResponse:
    resource = f"job/{job_id}/artifacts/{name}"
    mark_audited_read(request, "job.artifact.read", resource)
    svc = service(request)
    await run_in_threadpool(svc.get, job_id, principal)
    found = await run_in_threadpool(svc.catalog.jobs.artifact, job_id, name)
    return await audited_download(
        request, principal, found["sha256"], action="job.artifact.read", resource=resource,
        media_type="application/octet-stream", filename=name, detail={"sha256": found["sha256"]},
    )  # fmt: skip


class ModelIn(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    artifact: str = Field(pattern=_ARTIFACT)
    metrics: dict[str, Any] = Field(default_factory=dict)
    card: dict[str, Any] = Field(default_factory=dict, description="More card fields: labels, notice, synthetic...")


@router.post("/api/v1/jobs/{job_id}/models", summary="Register one of the job's artefacts as a model")
async def register_model(
    request: Request, body: ModelIn, job_id: str = Path(pattern=_JOB), principal: Principal = Depends(job_or_researcher)
) -> JSONResponse:
    reserved = {"name", "version", "files", "sha256", "training", "created"} & set(body.card)
    if reserved:
        raise InvalidInput(f"the hub writes these card fields itself: {', '.join(sorted(reserved))}")
    fields = body.card | {"metrics": body.metrics}
    card = await run_in_threadpool(
        lambda: service(request).register_model(
            job_id, principal, name=body.name, version=body.version, artifact=body.artifact, fields=fields
        )
    )
    return JSONResponse(card, status_code=201)


def _own_dataset(svc: JobService, job_id: str, principal: Principal) -> dict[str, Any]:
    job = svc.get(job_id, principal)
    principal.require_dataset(job["dataset"])
    return job


@router.get("/api/v1/jobs/{job_id}/dataset/manifest", summary="A job reads its dataset version's manifest")
async def job_manifest(
    request: Request,
    job_id: str = Path(pattern=_JOB),
    principal: Principal = Depends(require(Permission.JOB_RUNTIME)),
) -> StreamingResponse:
    svc = service(request)
    job = await run_in_threadpool(_own_dataset, svc, job_id, principal)
    lines = await run_in_threadpool(svc.catalog.datasets.manifest_lines, job["dataset"], principal.readable_projects())
    return StreamingResponse(
        iter(lines), media_type="application/x-ndjson", headers={"X-Dataset-Version": job["dataset"]}
    )


@router.get("/api/v1/jobs/{job_id}/dataset/files/{ref}", summary="A job reads one file of its dataset (audited)")
async def job_file(
    request: Request,
    job_id: str = Path(pattern=_JOB),
    ref: str = Path(max_length=64),
    principal: Principal = Depends(require(Permission.JOB_RUNTIME)),
) -> StreamingResponse:
    svc = service(request)
    resource = f"job/{job_id}/dataset/{ref}"
    mark_audited_read(request, "job.dataset.read", resource)
    job = await run_in_threadpool(_own_dataset, svc, job_id, principal)
    entry = await run_in_threadpool(svc.catalog.datasets.get_file, job["dataset"], ref, principal.readable_projects())
    return await audited_download(
        request, principal, entry["sha256"], action="job.dataset.read", resource=resource,
        media_type="application/dicom", filename=f"{entry['sop_uid']}.dcm",
        detail={"dataset": job["dataset"], "sha256": entry["sha256"], "sop_uid": entry["sop_uid"]},
    )  # fmt: skip


MAX_BATCH = 1000


@router.get(
    "/api/v1/jobs/{job_id}/dataset/batch",
    summary="A job reads a run of its dataset's files at once: their bytes concatenated in index order (audited)",
)
async def job_batch(
    request: Request,
    job_id: str = Path(pattern=_JOB),
    start: int = Query(0, ge=0),
    count: int = Query(256, ge=1, le=MAX_BATCH),
    principal: Principal = Depends(require(Permission.JOB_RUNTIME)),
) -> StreamingResponse:
    """The manifest gives each file's size and SHA-256, so the caller splits and checks the body itself."""
    from medcloud.store.datasets import VersionWithdrawn

    svc = service(request)
    resource = f"job/{job_id}/dataset/batch/{start}+{count}"
    mark_audited_read(request, "job.dataset.read", resource)
    job = await run_in_threadpool(_own_dataset, svc, job_id, principal)
    version = await run_in_threadpool(svc.catalog.datasets.get_version, job["dataset"], principal.readable_projects())
    if version["status"] != "active":
        raise VersionWithdrawn(f"dataset version {job['dataset']} was withdrawn: {version['withdrawn_reason']}")
    files = await run_in_threadpool(svc.catalog.jobs.dataset_slice, job["dataset"], start, count)
    if not files:
        raise InvalidInput(f"no files from index {start}: the version has {version['file_count']}")
    handles = []
    try:
        for _, sha, _ in files:  # open all before the audit: a missing blob is never recorded as read
            handles.append(svc.blobs.open(sha))
        detail = {"dataset": job["dataset"], "start": start, "count": len(files), "bytes": sum(f[2] for f in files)}
        await run_in_threadpool(
            record_audit, request, principal, action="job.dataset.read", resource=resource, outcome="ok", detail=detail
        )
    except BaseException:
        for fh in handles:
            fh.close()
        raise

    def body() -> Iterator[bytes]:
        for fh in handles:
            with fh:
                while chunk := fh.read(1024 * 1024):
                    yield chunk

    total = sum(f[2] for f in files)
    headers = {"X-Dataset-Version": job["dataset"], "X-First-Index": str(files[0][0]), "X-Count": str(len(files))}
    return StreamingResponse(
        body(), media_type="application/octet-stream", headers=headers | {"Content-Length": str(total)}
    )
