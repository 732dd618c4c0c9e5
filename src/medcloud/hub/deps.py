"""Security as dependencies: authenticate the bearer token, check the permission, audit the act."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from medcloud.errors import Forbidden, InvalidInput, SecondFactorRequired, TooLarge, Unauthenticated
from medcloud.hub.state import HubState
from medcloud.security.passkeys import mfa_fresh, require_person
from medcloud.security.policy import STEP_UP_PERMISSIONS, Permission, Principal
from medcloud.security.tokens import NotInMemory, UnknownToken
from medcloud.store.blobs import LocalBlobStore, StoredBlob

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Paths that carry data or act on it: every refusal there is audited and no answer is cached.
DATA_PATH_PREFIXES = ("/api/", "/dicom-web/")
# What a person's session may reach before its passkey (sign-in ceremonies, and who am I).
MFA_FREE_PREFIXES = ("/api/v1/auth/",)
MFA_FREE_PATHS = frozenset({"/api/v1/whoami"})
# The largest integer a catalog id, sequence number or OFFSET may be (SQLite INTEGER, PostgreSQL BIGINT):
# a bigger one in a path or query is refused as invalid input instead of overflowing in the driver (500).
MAX_SQL_INT = 2**63 - 1
# Only the address part of a forwarding header's entry is kept, and no more than this.
MAX_CLIENT_CHARS = 100


def hub_state(request: Request) -> HubState:
    state: HubState = request.app.state.hub
    return state


def client_address(request: Request) -> str:
    """The caller's address for the audit trail.

    The connection's peer, unless `trusted_proxy_header` is configured and the peer is one of
    `trusted_proxies`: then the rightmost entry of that header that is not a trusted proxy, which is
    the address our own proxy appended. Entries to its left were written by the client and prove nothing.
    """
    settings = hub_state(request).settings
    peer = request.client.host if request.client else ""
    header = settings.trusted_proxy_header
    trusted = set(settings.trusted_proxies)
    if not header or peer not in trusted:
        return peer
    hops = [h.strip() for value in request.headers.getlist(header) for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop[:MAX_CLIENT_CHARS]
    return peer


def authenticate(request: Request, *, use: bool = True, memory_only: bool = False) -> Principal:
    """The caller behind `Authorization: Bearer <token>`, or 401 (400 for two Authorization headers).

    `use=False` (the session refresh only): a person's idle session is refused, but this request does not
    count as activity, so a page left open cannot keep its session alive by refreshing it.
    `memory_only`: decide without reading the catalog, or raise `NotInMemory` having decided nothing (see
    `require`)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        # Proxies and frameworks disagree on which of two headers counts: refuse rather than pick one.
        raise InvalidInput("more than one Authorization header")
    scheme, _, token = (headers[0] if headers else "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    state = hub_state(request)
    # Guessing is locked per source address, never per token id (see security.lockout).
    lock_key = f"addr:{client_address(request)}"
    if state.lockouts is not None:
        if memory_only and not state.lockouts.checks_from_memory(lock_key):
            raise NotInMemory(lock_key)
        state.lockouts.check(lock_key)
    try:
        principal = state.verifier.verify(token, use=use, memory_only=memory_only)
    except Unauthenticated as exc:
        request.state.refused_subject = exc.subject
        # A well-formed token with an unknown id or a wrong secret is a guess; a malformed one cannot
        # succeed, and a revoked or expired one holds its real secret: neither is counted.
        if isinstance(exc, UnknownToken) and state.lockouts is not None:
            state.lockouts.fail(lock_key, client=client_address(request), reason="bearer token")
        raise
    try:
        _require_second_factor(request, principal)
    except SecondFactorRequired:
        request.state.refused_subject = principal.subject
        raise
    settings = hub_state(request).settings
    if settings.tls_client_ca_file is not None or "extensions" in request.scope:
        from medcloud.security.tls import check_site_binding

        try:
            check_site_binding(request.scope, principal, mtls_required=settings.tls_client_ca_file is not None)
        except Forbidden:
            request.state.refused_subject = principal.subject
            raise
    request.state.principal = principal
    return principal


def authenticated(request: Request) -> Principal:
    """Dependency: the caller behind the bearer token, whatever its role, else 401.

    Routes depend on this, never on `authenticate` itself: FastAPI would publish `authenticate`'s keyword
    options as query parameters that any caller could set (`?use=false`, `?memory_only=true`)."""
    return authenticate(request)


def _require_second_factor(request: Request, principal: Principal) -> None:
    """A person's session that has not passed its passkey reaches only sign-in routes and whoami."""
    if principal.kind != "session" or principal.mfa_at is not None:
        return
    if not hub_state(request).settings.mfa_required:
        return
    path = request.url.path
    if path in MFA_FREE_PATHS or path.startswith(MFA_FREE_PREFIXES):
        return
    raise SecondFactorRequired(
        "second factor required: sign in with your passkey first (POST /api/v1/auth/webauthn/authenticate/options)"
    )


def require_step_up(request: Request, principal: Principal, permission: Permission) -> None:
    """An administrative act by a person's session needs a passkey within `mfa_admin_max_age_seconds`."""
    if principal.kind != "session" or permission not in STEP_UP_PERMISSIONS:
        return
    max_age = hub_state(request).settings.mfa_admin_max_age_seconds
    if not mfa_fresh(principal, max_age):
        raise SecondFactorRequired(
            f"second factor required: {permission.value} needs a passkey sign-in within the last "
            f"{max_age // 60} min (POST /api/v1/auth/webauthn/authenticate/options)"
        )


def authorize(request: Request, permission: Permission, *, memory_only: bool = False) -> Principal:
    """The caller, if it holds `permission` (and, for an administrative act by a session, a fresh passkey)."""
    principal = authenticate(request, memory_only=memory_only)
    principal.require(permission)
    require_step_up(request, principal, permission)
    return principal


def require_session(request: Request) -> Principal:
    """Dependency: a person's signed-in session (machine tokens have no passkeys), else 401/403."""
    principal = authenticate(request)
    require_person(principal)
    return principal


require_session.checks_caller = True  # type: ignore[attr-defined]  # run by problems._check_caller too


def require(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """Dependency factory: authenticated and holding `permission`, else 401/403.

    The same checks either way; only where they run differs. When they need nothing from the catalog
    (the usual case: a token seen within `token_cache_seconds`) they run on the event loop, which saves
    the hop to a worker thread and back on every request; otherwise (`NotInMemory`, raised before anything
    is decided or written) they run again in a worker thread, so that a catalog read never blocks the loop.
    """

    async def dependency(request: Request) -> Principal:
        try:
            return authorize(request, permission, memory_only=True)
        except NotInMemory:
            return await run_in_threadpool(authorize, request, permission)

    dependency.__name__ = f"require_{permission.name.lower()}"
    dependency.permission = permission  # type: ignore[attr-defined]  # found by guard_before_body
    return dependency


def is_audited_refusal(request: Request) -> bool:
    """Whether refusing `request` is audited: every API request and every state change, reads included."""
    return request.url.path.startswith(DATA_PATH_PREFIXES) or request.method in STATE_CHANGING


def record_audit(
    request: Request,
    principal: Principal | None,
    *,
    action: str,
    resource: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit event now, before the response is sent."""
    subject = principal.subject if principal else getattr(request.state, "refused_subject", None) or "anonymous"
    hub_state(request).catalog.audit.record(
        subject=subject,
        action=action,
        resource=resource,
        outcome=outcome,
        client=client_address(request),
        detail=detail,
    )


def mark_audited_read(request: Request, action: str, resource: str) -> None:
    """Name a read of image bytes, so that its audit event (a refusal too) says what was read."""
    request.state.audit_action = action
    request.state.audit_resource = resource


async def audited_download(
    request: Request,
    principal: Principal,
    sha256: str,
    *,
    action: str,
    resource: str,
    media_type: str,
    filename: str,
    detail: dict[str, Any],
) -> StreamingResponse:
    """Open the blob, then audit the read, then stream: a missing blob is never recorded as read."""
    fh = hub_state(request).blobs.open(sha256)  # raises NotFound before any byte is sent
    try:
        await run_in_threadpool(
            record_audit, request, principal, action=action, resource=resource, outcome="ok", detail=detail
        )
    except BaseException:
        fh.close()
        raise

    def chunks() -> Iterator[bytes]:
        with fh:
            while chunk := fh.read(1024 * 1024):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Content-SHA256": sha256},
    )


async def store_body(request: Request, blobs: LocalBlobStore, limit: int, what: str) -> StoredBlob:
    """Stream the request body into the blob store, at most `limit` bytes (413 naming `what` otherwise,
    before reading when Content-Length already says so); nothing is kept from a failed upload."""
    if int(request.headers.get("content-length") or 0) > limit:
        raise TooLarge(f"{what} is at most {limit} bytes")
    upload = blobs.spool(limit)
    try:
        async for chunk in request.stream():
            await run_in_threadpool(upload.write, chunk)
        await run_in_threadpool(upload.finish)
        return await run_in_threadpool(blobs.commit, upload)
    except BaseException:
        upload.discard()
        raise
