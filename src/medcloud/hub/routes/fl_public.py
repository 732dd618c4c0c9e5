"""The federated-learning public key folder, relayed between sites (docs/federated.md, "The public folder
through the hub").

Sites publish their identities, the lead its signed ceremony files, the threshold parties their shares;
every site fetches the others'. The hub relays but cannot alter unnoticed (the ceremony is checked at
each site); on top, a name that says who wrote it is accepted only from that site's token, any other
name only from its first writer, and a secret-looking name never.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from medcloud.errors import Forbidden, NotFound
from medcloud.federated.relay import MAX_PUBLIC_FILE_BYTES, author_of, validate_federation, validate_public_name
from medcloud.hub.deps import (
    audited_download,
    authenticate,
    client_address,
    hub_state,
    mark_audited_read,
    require,
    store_body,
)
from medcloud.security.policy import Permission, Principal, Role

router = APIRouter(tags=["federated"])

_FED = r"^[A-Za-z0-9._-]{1,64}$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$"


def participant_or_aggregator(request: Request) -> Principal:
    """A site (FL participation) or the aggregator's operator (admin): the two that need the folder."""
    principal = authenticate(request)
    if not (principal.can(Permission.FL_PARTICIPATE) or principal.can(Permission.FL_AGGREGATE)):
        raise Forbidden(f"role '{principal.role.value}' takes no part in federated learning")
    return principal


def _check_federation(principal: Principal, federation: str) -> None:
    validate_federation(federation)
    if principal.role is Role.SITE:
        principal.require_project(federation)  # a site reads and writes only federations granted to it


@router.get("/api/v1/fl/{federation}/public", summary="The newest version of every public key file")
async def list_public(
    request: Request,
    federation: str = Path(pattern=_FED),
    principal: Principal = Depends(participant_or_aggregator),
) -> dict[str, Any]:
    _check_federation(principal, federation)
    items = await run_in_threadpool(hub_state(request).catalog.fl_public.latest, federation)
    return {"federation": federation, "items": items}


@router.get("/api/v1/fl/{federation}/public/{name}", summary="One public key file (its newest version)")
async def get_public(
    request: Request,
    federation: str = Path(pattern=_FED),
    name: str = Path(pattern=_NAME),
    principal: Principal = Depends(participant_or_aggregator),
) -> StreamingResponse:
    resource = f"fl/{federation}/public/{name}"
    mark_audited_read(request, "fl.public.read", resource)
    _check_federation(principal, federation)
    validate_public_name(name)
    found = await run_in_threadpool(hub_state(request).catalog.fl_public.get, federation, name)
    if found is None:
        raise NotFound(f"{name} has not been published in federation {federation}")
    response = await audited_download(
        request, principal, found["sha256"], action="fl.public.read", resource=resource,
        media_type="application/octet-stream", filename=name,
        detail={"sha256": found["sha256"], "version": found["version"]},
    )  # fmt: skip
    response.headers["X-Uploaded-By"] = found["uploaded_by"]
    response.headers["X-Version"] = str(found["version"])
    return response


@router.put("/api/v1/fl/{federation}/public/{name}", summary="Publish a public key file as this site")
async def put_public(
    request: Request,
    federation: str = Path(pattern=_FED),
    name: str = Path(pattern=_NAME),
    principal: Principal = Depends(require(Permission.FL_PARTICIPATE)),
) -> JSONResponse:
    _check_federation(principal, federation)
    validate_public_name(name)
    site = principal.site or ""
    author = author_of(name)
    if author is not None and author != site:
        raise Forbidden(f"{name} is {author}'s to publish, not {site}'s")
    state = hub_state(request)
    stored = await store_body(request, state.blobs, MAX_PUBLIC_FILE_BYTES, "a public key file")
    cat = state.catalog

    def record() -> tuple[dict[str, Any], bool]:
        with cat.write() as conn:
            row, created = cat.fl_public.put(
                conn, federation, name, stored.sha256, stored.size, site, may_replace=author == site
            )
            cat.audit.append(
                conn, subject=principal.subject, action="fl.public.put", resource=f"fl/{federation}/public/{name}",
                outcome="created" if created else "unchanged", client=client_address(request),
                detail={"sha256": stored.sha256, "size": stored.size, "version": row["version"]},
            )  # fmt: skip
        return row, created

    row, created = await run_in_threadpool(record)
    return JSONResponse(row, status_code=201 if created else 200)
