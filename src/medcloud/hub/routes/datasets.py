"""Cohorts (saved queries) and frozen dataset versions: save, freeze, list, show, manifest, files (audited)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medcloud.errors import InvalidInput
from medcloud.hub.deps import audited_download, hub_state, mark_audited_read, record_audit, require
from medcloud.security.policy import Permission, Principal

router = APIRouter(tags=["datasets"])
_VERSION = r"^[0-9a-f]{64}$"


class CohortIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    projects: list[str] | None = Field(None, max_length=50, description="Default: every project granted")
    query: list[dict[str, Any]] = Field(description="Terms, all of which must hold (see docs/datasets.md)")


class FreezeIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    cohort: str | None = Field(None, max_length=100, description="A saved cohort's name (or give `query`)")
    query: list[dict[str, Any]] | None = None
    projects: list[str] | None = Field(None, max_length=50, description="Default: the cohort's or every granted")
    split: dict[str, float] | None = Field(
        None, max_length=10, description='Default {"train":0.8,"val":0.1,"test":0.1}'
    )
    seed: int = Field(0, ge=0, lt=2**63)


def _granted(principal: Principal, projects: list[str] | None) -> list[str]:
    """The projects asked for (or every one granted), each checked against the token's grants."""
    chosen = sorted(set(projects)) if projects is not None else sorted(principal.projects)
    if not chosen:
        raise InvalidInput("no project given and none granted to this token")
    for project in chosen:
        principal.require_project(project)
    return chosen


@router.post(
    "/api/v1/cohorts",
    summary="Save a cohort (a named query)",
    responses={201: {"description": "A new cohort was saved (200: it existed already)"}},
)
async def save_cohort(
    request: Request, body: CohortIn, principal: Principal = Depends(require(Permission.DATASETS_WRITE))
) -> JSONResponse:
    projects = _granted(principal, body.projects)
    cat = hub_state(request).catalog

    def save() -> tuple[dict[str, Any], bool]:
        with cat.write() as conn:
            return cat.datasets.save_cohort(conn, body.name, projects, body.query, principal.subject)

    cohort, created = await run_in_threadpool(save)
    await run_in_threadpool(
        record_audit, request, principal, action="cohort.save", resource=f"cohort/{body.name}",
        outcome="created" if created else "unchanged", detail={"projects": projects},
    )  # fmt: skip
    return JSONResponse(cohort, status_code=201 if created else 200)


@router.get("/api/v1/cohorts", summary="List cohorts of granted projects")
async def list_cohorts(
    request: Request, principal: Principal = Depends(require(Permission.CATALOG_READ))
) -> dict[str, Any]:
    items = await run_in_threadpool(hub_state(request).catalog.datasets.list_cohorts, principal.readable_projects())
    return {"items": items}


@router.get("/api/v1/cohorts/{cohort}", summary="One cohort and how many instances it matches now")
async def get_cohort(
    request: Request,
    cohort: str,
    project: str | None = Query(None, description="Disambiguates a name used in several project sets"),
    principal: Principal = Depends(require(Permission.CATALOG_READ)),
) -> dict[str, Any]:
    ds = hub_state(request).catalog.datasets
    found = await run_in_threadpool(ds.get_cohort, cohort, principal.readable_projects(), project)
    found["matches"] = await run_in_threadpool(ds.count, found["query"], found["projects"])
    return found


class PreviewIn(BaseModel):
    query: list[dict[str, Any]] = Field(description="Terms, all of which must hold (image and finding terms)")
    projects: list[str] | None = Field(None, max_length=50, description="Default: every project granted")
    limit: int = Field(20, ge=0, le=1000)
    offset: int = Field(0, ge=0)


@router.post("/api/v1/cohorts/preview", summary="What a query matches now: counts and a page of studies")
async def preview_cohort(
    request: Request, body: PreviewIn, principal: Principal = Depends(require(Permission.CATALOG_READ))
) -> dict[str, Any]:
    projects = _granted(principal, body.projects)
    ds = hub_state(request).catalog.datasets
    return await run_in_threadpool(lambda: ds.preview(body.query, projects, limit=body.limit, offset=body.offset))


@router.post(
    "/api/v1/datasets",
    summary="Freeze a dataset version (201 new, 200 when it exists already)",
    responses={201: {"description": "A new dataset version was frozen"}},
)
async def freeze(
    request: Request, body: FreezeIn, principal: Principal = Depends(require(Permission.DATASETS_WRITE))
) -> JSONResponse:
    cat = hub_state(request).catalog
    if (body.cohort is None) == (body.query is None):
        raise InvalidInput("give exactly one of `cohort` and `query`")
    query: Any = body.query
    projects = body.projects
    if body.cohort is not None:
        cohort = await run_in_threadpool(
            cat.datasets.get_cohort, body.cohort, principal.readable_projects(), projects[0] if projects else None
        )
        query = cohort["query"]
        projects = projects if projects is not None else cohort["projects"]
    chosen = _granted(principal, projects)

    def run() -> Any:
        with cat.write() as conn:
            return cat.datasets.freeze(
                conn, name=body.name, query=query, projects=chosen, split=body.split, seed=body.seed,
                cohort=body.cohort, created_by=principal.subject,
            )  # fmt: skip

    result = await run_in_threadpool(run)
    version = result.version
    await run_in_threadpool(
        record_audit, request, principal, action="dataset.freeze", resource=f"dataset/{version['id']}",
        outcome="created" if result.created else "unchanged",
        detail={"name": body.name, "projects": chosen, "files": version["file_count"]},
    )  # fmt: skip
    return JSONResponse(version, status_code=201 if result.created else 200)


@router.get("/api/v1/datasets", summary="List dataset versions of granted projects")
async def list_versions(
    request: Request,
    name: str | None = Query(None, max_length=100),
    principal: Principal = Depends(require(Permission.CATALOG_READ)),
) -> dict[str, Any]:
    ds = hub_state(request).catalog.datasets
    return {"items": await run_in_threadpool(ds.list_versions, principal.readable_projects(), name)}


@router.get("/api/v1/datasets/{dataset_id}", summary="One dataset version's summary")
async def get_version(
    request: Request,
    dataset_id: str = Path(pattern=_VERSION),
    principal: Principal = Depends(require(Permission.CATALOG_READ)),
) -> dict[str, Any]:
    ds = hub_state(request).catalog.datasets
    return await run_in_threadpool(ds.get_version, dataset_id, principal.readable_projects())


@router.get("/api/v1/datasets/{dataset_id}/manifest", summary="The canonical manifest (JSON Lines; SHA-256 = id)")
async def get_manifest(
    request: Request,
    dataset_id: str = Path(pattern=_VERSION),
    principal: Principal = Depends(require(Permission.CATALOG_READ)),
) -> StreamingResponse:
    ds = hub_state(request).catalog.datasets
    lines = await run_in_threadpool(ds.manifest_lines, dataset_id, principal.readable_projects())
    return StreamingResponse(iter(lines), media_type="application/x-ndjson", headers={"X-Dataset-Version": dataset_id})


@router.get("/api/v1/datasets/{dataset_id}/files/{ref}/file", summary="A version's file by index or SOP UID (audited)")
async def get_file(
    request: Request,
    dataset_id: str = Path(pattern=_VERSION),
    ref: str = Path(max_length=64),
    principal: Principal = Depends(require(Permission.BYTES_READ)),
) -> StreamingResponse:
    resource = f"dataset/{dataset_id}/{ref}"
    mark_audited_read(request, "dataset.file.read", resource)
    state = hub_state(request)
    entry = await run_in_threadpool(state.catalog.datasets.get_file, dataset_id, ref, principal.readable_projects())
    return await audited_download(
        request, principal, entry["sha256"], action="dataset.file.read", resource=resource,
        media_type="application/dicom", filename=f"{entry['sop_uid']}.dcm",
        detail={"sha256": entry["sha256"], "sop_uid": entry["sop_uid"]},
    )  # fmt: skip
