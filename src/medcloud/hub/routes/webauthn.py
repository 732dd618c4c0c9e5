"""Passkeys for people's sessions: register one, sign in with one (the second factor), and the admin's
removal of a person's passkeys, one-time enrolment codes and lifting of a lock. The ceremonies live in
`security.passkeys`, the codes in `security.enrolment_codes`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medcloud.errors import NotFound
from medcloud.hub.deps import client_address, hub_state, require, require_session
from medcloud.security import enrolment_codes
from medcloud.security.lockout import LockoutBook
from medcloud.security.passkeys import PasskeyCeremonies, relying_party, remove_passkeys
from medcloud.security.policy import Permission, Principal

router = APIRouter(tags=["auth"])
BASE = "/api/v1/auth/webauthn"


class PasskeyResponse(BaseModel):
    credential: dict[str, Any] = Field(description="The browser's PublicKeyCredential, as JSON (base64url fields)")
    label: str = Field("", max_length=100, description="A name for a new passkey, e.g. 'office key'")


class EnrolmentCodeRequest(BaseModel):
    person: str = Field(min_length=1, max_length=256, description="The person's subject at the identity provider")
    minutes: int | None = Field(
        None, ge=1, le=10080, description="Life of the code (default and most: mfa_enrol_code_seconds)"
    )


class EnrolmentCodeRedeem(BaseModel):
    code: str = Field(max_length=64, description="The code the administrator gave, e.g. 'K3QZ-8M2P-...'")


def _lockouts(request: Request) -> LockoutBook:
    lockouts = hub_state(request).lockouts
    assert isinstance(lockouts, LockoutBook)
    return lockouts


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


@router.post(f"{BASE}/enrolment-codes", status_code=201, summary="Issue a one-time passkey enrolment code (shown once)")
async def issue_enrolment_code(
    request: Request, body: EnrolmentCodeRequest, principal: Principal = Depends(require(Permission.TOKENS_MANAGE))
) -> dict[str, Any]:
    settings, catalog, client = hub_state(request).settings, hub_state(request).catalog, client_address(request)
    most = settings.mfa_enrol_code_seconds
    seconds = most if body.minutes is None else body.minutes * 60

    def issue() -> enrolment_codes.IssuedCode:
        return enrolment_codes.issue(
            catalog, body.person, by=principal.subject, client=client, seconds=seconds, max_seconds=most
        )

    issued = await run_in_threadpool(issue)
    return {"code": issued.code, "code_id": issued.code_id, "person": issued.person,
            "expires_at": issued.expires_at.isoformat()}  # fmt: skip


@router.get(f"{BASE}/enrolment-codes", summary="Enrolment codes and their state (never the codes)")
async def list_enrolment_codes(
    request: Request, person: str | None = None, principal: Principal = Depends(require(Permission.TOKENS_MANAGE))
) -> dict[str, Any]:
    catalog = hub_state(request).catalog
    return {"items": await run_in_threadpool(enrolment_codes.listing, catalog, person)}


@router.delete(f"{BASE}/enrolment-codes/{{code_id}}", summary="Revoke an open enrolment code")
async def revoke_enrolment_code(
    request: Request, code_id: str, principal: Principal = Depends(require(Permission.TOKENS_MANAGE))
) -> dict[str, Any]:
    catalog, client = hub_state(request).catalog, client_address(request)
    done = await run_in_threadpool(
        lambda: enrolment_codes.revoke(catalog, code_id, by=principal.subject, client=client)
    )
    if not done:
        raise NotFound(f"no open enrolment code {code_id!r}")
    return {"code_id": code_id, "revoked": True}


@router.post(f"{BASE}/enrolment-codes/redeem", summary="Redeem an enrolment code: this session may register a passkey")
async def redeem_enrolment_code(
    request: Request, body: EnrolmentCodeRedeem, principal: Principal = Depends(require_session)
) -> dict[str, Any]:
    catalog, lockouts, client = hub_state(request).catalog, _lockouts(request), client_address(request)
    until = await run_in_threadpool(
        lambda: enrolment_codes.redeem(catalog, lockouts, principal, body.code, client=client)
    )
    return {"redeemed": True, "enrol_until": until.isoformat()}
