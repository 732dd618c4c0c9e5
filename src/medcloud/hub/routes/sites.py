"""Collection progress per site against its targets; admins set the targets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
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
