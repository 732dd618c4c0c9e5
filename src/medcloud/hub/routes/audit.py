"""The audit trail for auditors: read events, verify the hash chain, signed checkpoints and proofs, a FHIR
AuditEvent export; FL rounds recorded by the aggregator; the log key's rotation, by an admin."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medcloud.errors import NotFound
from medcloud.hub.deps import MAX_SQL_INT, client_address, hub_state, record_audit, require
from medcloud.security.policy import Permission, Principal
from medcloud.store import MAX_PAGE

router = APIRouter(tags=["audit"])


@router.get("/api/v1/audit", summary="Audit events in order")
async def list_events(
    request: Request,
    after: int = Query(0, ge=0, le=MAX_SQL_INT, description="Return events with seq greater than this"),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    action: str | None = None,
    _: Principal = Depends(require(Permission.AUDIT_READ)),
) -> dict[str, Any]:
    items = await run_in_threadpool(hub_state(request).catalog.audit.page, after, limit, action)
    return {"items": items, "next_after": items[-1]["seq"] if items else after}


@router.get("/api/v1/audit/verify", summary="Check the hash chain end to end")
async def verify(request: Request, _: Principal = Depends(require(Permission.AUDIT_READ))) -> dict[str, Any]:
    report = await run_in_threadpool(hub_state(request).catalog.audit.verify)
    return report.as_dict()


class RoundEvent(BaseModel):
    round: int = Field(ge=0)
    model_version: str = Field(max_length=100)
    mode: str = Field(max_length=40)
    participants: list[str] = Field(default_factory=list, max_length=1000)
    bytes_up: dict[str, int] = Field(default_factory=dict)
    bytes_down: dict[str, int] = Field(default_factory=dict)
    share_bytes: dict[str, int] | int | None = Field(None, description="Threshold mode: decryption-share bytes")
    seconds: float | None = Field(None, ge=0, description="Round wall time")


@router.post("/api/v1/fl/rounds", status_code=201, summary="Record one federated round (aggregator)")
async def record_round(
    request: Request, body: RoundEvent, principal: Principal = Depends(require(Permission.FL_AGGREGATE))
) -> dict[str, Any]:
    await run_in_threadpool(
        record_audit, request, principal, action="fl.round", resource=f"fl/{body.model_version}/round/{body.round}",
        outcome="ok", detail=body.model_dump(exclude_none=True),
    )  # fmt: skip
    return {"recorded": True, "round": body.round}


@router.get("/api/v1/audit/checkpoints/latest", summary="The newest signed tree head of the audit log")
async def latest_checkpoint(request: Request, _: Principal = Depends(require(Permission.AUDIT_READ))) -> dict[str, Any]:
    audit = hub_state(request).catalog.audit
    head = await run_in_threadpool(audit.latest_checkpoint)
    if head is None:
        head = await run_in_threadpool(audit.checkpoint)
    return head.as_dict()


@router.get("/api/v1/audit/log-key", summary="The log's Ed25519 public key (PEM) that signs tree heads")
async def log_key(request: Request, _: Principal = Depends(require(Permission.AUDIT_READ))) -> Response:
    key = hub_state(request).catalog.audit.log_key
    if key is None:
        raise NotFound("this hub has no audit log key")
    return Response(key.public_pem(), media_type="application/x-pem-file")


@router.get("/api/v1/audit/log-keys", summary="Every public key the log was signed with, and the rotations")
async def log_keys(request: Request, _: Principal = Depends(require(Permission.AUDIT_READ))) -> dict[str, Any]:
    return await run_in_threadpool(hub_state(request).catalog.audit.keys_document)


@router.post(
    "/api/v1/audit/log-key/rotate",
    summary="Replace the log's signing key (as `medcloud audit rotate-log-key`); answers the rotation statement",
)
async def rotate_log_key(
    request: Request, principal: Principal = Depends(require(Permission.AUDIT_KEY_ROTATE))
) -> dict[str, Any]:
    from medcloud.store.catalog import rotate_log_key as rotate

    state = hub_state(request)
    statement, _ = await run_in_threadpool(
        lambda: rotate(state.settings, state.catalog, subject=principal.subject, client=client_address(request))
    )
    return statement


@router.get("/api/v1/audit/proof/{event_id}", summary="Inclusion (and consistency) proof of one event")
async def proof(
    request: Request,
    event_id: int = Path(ge=1, description="The event's seq"),
    since_size: int | None = Query(None, ge=0, description="Also prove consistency from the signed head of this size"),
    _: Principal = Depends(require(Permission.AUDIT_READ)),
) -> dict[str, Any]:
    audit = hub_state(request).catalog.audit
    return await run_in_threadpool(lambda: audit.prove(event_id, since_size=since_size))


@router.get("/api/v1/audit/fhir", summary="Audit events as a FHIR R4 Bundle of AuditEvent (IHE BALP)")
async def fhir(
    request: Request,
    since: datetime | None = Query(None, description="Only events recorded at or after this time (ISO 8601)"),
    after: int = Query(0, ge=0, description="Only events with seq greater than this"),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    _: Principal = Depends(require(Permission.AUDIT_READ)),
) -> Response:
    from medcloud.security.fhir import bundle

    rows = await run_in_threadpool(hub_state(request).catalog.audit.page, after, limit, None, since)
    body = json.dumps(bundle(rows), ensure_ascii=False)
    return Response(body, media_type="application/fhir+json")
