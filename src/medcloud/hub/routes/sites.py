"""Collection progress per site and per society against their targets; admins set the targets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medcloud.hub.deps import client_address, hub_state, require
from medcloud.security.policy import Permission, Principal
from medcloud.security.tokens import validate_name

router = APIRouter(tags=["sites"])


class SiteTargets(BaseModel):
    display_name: str | None = Field(None, max_length=200)
    target_cases: int | None = Field(None, ge=0)
    target_images: int | None = Field(None, ge=0)
    society: str | None = Field(None, max_length=64, description='A registered society, or "" for none')


class SocietyTargets(BaseModel):
    display_name: str | None = Field(None, max_length=200)
    display_name_ja: str | None = Field(None, max_length=200)
    target_cases: int | None = Field(None, ge=0)
    target_images: int | None = Field(None, ge=0)


@router.get("/api/v1/sites", summary="Cases and images per site, against targets")
async def list_sites(
    request: Request, principal: Principal = Depends(require(Permission.SITES_READ))
) -> dict[str, Any]:
    items = await run_in_threadpool(hub_state(request).catalog.sites.progress, principal.readable_projects())
    return {"items": items}


@router.put("/api/v1/sites/{name}", summary="Register a site or set its targets")
async def put_site(
    request: Request, name: str, body: SiteTargets, principal: Principal = Depends(require(Permission.SITES_MANAGE))
) -> dict[str, Any]:
    validate_name("site", name)
    cat = hub_state(request).catalog

    def write() -> None:
        with cat.write() as conn:
            cat.sites.upsert(conn, name, **body.model_dump())
            cat.audit.append(
                conn,
                subject=principal.subject,
                action="site.update",
                resource=f"site/{name}",
                outcome="ok",
                client=client_address(request),
                detail=body.model_dump(),
            )

    await run_in_threadpool(write)
    return {"site": name, **body.model_dump()}


@router.get("/api/v1/progress", summary="Cases and images per society and per site, against targets")
async def progress(request: Request, principal: Principal = Depends(require(Permission.SITES_READ))) -> dict[str, Any]:
    societies = hub_state(request).catalog.societies
    return await run_in_threadpool(societies.progress, principal.readable_projects())


@router.put(
    "/api/v1/societies/{name}",
    summary="Register a society or set its names and targets",
    responses={201: {"description": "The society was registered (200: an existing one was updated)"}},
)
async def put_society(
    request: Request,
    name: str,
    body: SocietyTargets,
    principal: Principal = Depends(require(Permission.SITES_MANAGE)),
) -> JSONResponse:
    validate_name("society", name)
    cat = hub_state(request).catalog

    def write() -> bool:
        with cat.write() as conn:
            created = cat.societies.upsert(conn, name, **body.model_dump())
            cat.audit.append(
                conn,
                subject=principal.subject,
                action="society.update",
                resource=f"society/{name}",
                outcome="created" if created else "ok",
                client=client_address(request),
                detail=body.model_dump(),
            )
            return created

    created = await run_in_threadpool(write)
    return JSONResponse({"society": name, **body.model_dump()}, status_code=201 if created else 200)
