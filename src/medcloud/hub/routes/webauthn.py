"""Passkeys for people's sessions: register one, sign in with one (the second factor), and the admin's
removal of a person's passkeys and lifting of a lock. The ceremonies live in `security.passkeys`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medcloud.hub.deps import client_address, hub_state, require, require_session
from medcloud.security.lockout import LockoutBook
from medcloud.security.passkeys import PasskeyCeremonies, relying_party, remove_passkeys
from medcloud.security.policy import Permission, Principal

router = APIRouter(tags=["auth"])
BASE = "/api/v1/auth/webauthn"


class PasskeyResponse(BaseModel):
    credential: dict[str, Any] = Field(description="The browser's PublicKeyCredential, as JSON (base64url fields)")
    label: str = Field("", max_length=100, description="A name for a new passkey, e.g. 'office key'")


def _ceremonies(request: Request) -> PasskeyCeremonies:
    state = hub_state(request)
    lockouts = state.lockouts
    assert isinstance(lockouts, LockoutBook)
    rp = relying_party(state.settings, request.url.scheme, request.headers.get("host", ""))
    return PasskeyCeremonies(state.catalog, state.settings, lockouts, rp, client=client_address(request))


@router.post(f"{BASE}/register/options", summary="Options to create a passkey (a fresh challenge)")
async def register_options(request: Request, principal: Principal = Depends(require_session)) -> dict[str, Any]:
    return await run_in_threadpool(_ceremonies(request).registration_options, principal)


@router.post(f"{BASE}/register/verify", status_code=201, summary="Store the passkey the browser created")
async def register_verify(
    request: Request, body: PasskeyResponse, principal: Principal = Depends(require_session)
) -> dict[str, Any]:
    ceremonies, client = _ceremonies(request), client_address(request)
    credential_id = await run_in_threadpool(
        lambda: ceremonies.register(principal, body.credential, client=client, label=body.label)
    )
    return {"registered": True, "credential_id": credential_id}


@router.post(f"{BASE}/authenticate/options", summary="Options to sign in with a passkey (a fresh challenge)")
async def authenticate_options(request: Request, principal: Principal = Depends(require_session)) -> dict[str, Any]:
    return await run_in_threadpool(_ceremonies(request).authentication_options, principal)


@router.post(f"{BASE}/authenticate/verify", summary="Check the passkey; the session passes its second factor")
async def authenticate_verify(
    request: Request, body: PasskeyResponse, principal: Principal = Depends(require_session)
) -> dict[str, Any]:
    ceremonies, client = _ceremonies(request), client_address(request)
    at = await run_in_threadpool(lambda: ceremonies.authenticate(principal, body.credential, client=client))
    hub_state(request).verifier.forget(principal.token_id)
    return {"second_factor": "ok", "mfa_at": at.isoformat()}


@router.get(f"{BASE}/credentials", summary="The caller's own passkeys (no keys)")
async def my_passkeys(request: Request, principal: Principal = Depends(require_session)) -> dict[str, Any]:
    rows = await run_in_threadpool(hub_state(request).catalog.passkeys.for_person, principal.person or "")
    return {
        "items": [
            {"credential_id": r["id"], "transports": [t for t in r["transports"].split(",") if t],
             "created_at": r["created_at"].isoformat(),
             "last_used_at": r["last_used_at"].isoformat() if r["last_used_at"] else None}
            for r in rows
        ]
    }  # fmt: skip


@router.delete(f"{BASE}/people/{{person}}", summary="Remove a person's passkeys (lost authenticator)")
async def remove_people_passkeys(
    request: Request, person: str, principal: Principal = Depends(require(Permission.TOKENS_MANAGE))
) -> dict[str, Any]:
    state = hub_state(request)
    lockouts = state.lockouts
    assert isinstance(lockouts, LockoutBook)
    client = client_address(request)

    remove = lambda: remove_passkeys(state.catalog, person, by=principal.subject, client=client)  # noqa: E731
    return {"person": person, "removed": await run_in_threadpool(remove)}


@router.delete("/api/v1/auth/lockouts/{key}", summary="Lift a lock (key: addr:<address> or person:<subject>)")
async def unlock(
    request: Request, key: str, principal: Principal = Depends(require(Permission.TOKENS_MANAGE))
) -> dict[str, Any]:
    lockouts = hub_state(request).lockouts
    assert isinstance(lockouts, LockoutBook)
    client = client_address(request)
    done = await run_in_threadpool(lambda: lockouts.unlock(key, by=principal.subject, client=client))
    return {"key": key, "unlocked": done}  # False: there was no lock (the end state is the same)
