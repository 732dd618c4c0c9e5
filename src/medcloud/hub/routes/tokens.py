"""Token administration (admin role): issue, list, revoke. Secrets are shown once and never stored."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medcloud.errors import NotFound
from medcloud.hub.deps import client_address, hub_state, require
from medcloud.security.policy import Permission, Principal
from medcloud.security.tokens import issue_token, parse_duration, revoke_token

router = APIRouter(tags=["tokens"])


# Job tokens are issued by the hub to one running job, never through this route.
IssuableRole = Literal["site", "researcher", "clinician", "auditor", "admin"]


class TokenRequest(BaseModel):
    role: IssuableRole
    site: str | None = None
    projects: list[str] = Field(default_factory=list)
    label: str = Field("", max_length=200)
    expires: str = Field("365d", max_length=40, description="e.g. 90d, 12h, 30m, 2w, or never (0 is refused)")


@router.get("/api/v1/whoami", summary="The caller's identity and grants")
async def whoami(request: Request) -> dict[str, Any]:
    from medcloud.hub.deps import authenticate
    from medcloud.security.passkeys import second_factor_status

    p = authenticate(request)
    state = hub_state(request)
    return {
        "token_id": p.token_id,
        "role": p.role.value,
        "site": p.site,
        "projects": sorted(p.projects),
        "expires_at": p.expires_at.isoformat() if p.expires_at else None,
        "kind": p.kind,
        "person": p.person,
        # The page's cue: "needed" asks for the passkey, "enrol" offers to register one.
        "second_factor": await run_in_threadpool(second_factor_status, state.catalog, state.settings, p),
    }


@router.post("/api/v1/tokens", status_code=201, summary="Issue a token (shown once)")
async def create_token(
    request: Request, body: TokenRequest, principal: Principal = Depends(require(Permission.TOKENS_MANAGE))
) -> dict[str, Any]:
    state = hub_state(request)
    issued = await run_in_threadpool(
        lambda: issue_token(
            state.catalog,
            role=body.role,
            site=body.site,
            projects=body.projects,
            label=body.label,
            expires_in=parse_duration(body.expires),
            issued_by=principal.subject,
            client=client_address(request),
        )
    )
    p = issued.principal
    return {
        "token": issued.token,
        "token_id": p.token_id,
        "role": p.role.value,
        "site": p.site,
        "projects": sorted(p.projects),
        "expires_at": p.expires_at.isoformat() if p.expires_at else None,
    }


@router.get("/api/v1/tokens", summary="List tokens (no secrets)")
async def list_tokens(request: Request, _: Principal = Depends(require(Permission.TOKENS_MANAGE))) -> dict[str, Any]:
    return {"items": await run_in_threadpool(hub_state(request).catalog.tokens.list_all)}


@router.delete("/api/v1/tokens/{token_id}", summary="Revoke a token")
async def delete_token(
    request: Request, token_id: str, principal: Principal = Depends(require(Permission.TOKENS_MANAGE))
) -> dict[str, Any]:
    state = hub_state(request)
    done = await run_in_threadpool(
        lambda: revoke_token(
            state.catalog, state.verifier, token_id, by=principal.subject, client=client_address(request)
        )
    )
    if not done:
        raise NotFound(f"no active token {token_id}")
    return {"token_id": token_id, "revoked": True}
