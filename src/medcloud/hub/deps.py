"""Security as dependencies: authenticate the bearer token, check the permission, audit the act."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request

from medcloud.errors import Unauthenticated
from medcloud.hub.state import HubState
from medcloud.security.policy import Permission, Principal

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def hub_state(request: Request) -> HubState:
    state: HubState = request.app.state.hub
    return state


def client_address(request: Request) -> str:
    header = hub_state(request).settings.trusted_proxy_header
    if header and (value := request.headers.get(header)):
        return value.split(",")[0].strip()[:100]
    return request.client.host if request.client else ""


def authenticate(request: Request) -> Principal:
    """The caller behind `Authorization: Bearer <token>`, or 401."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    principal = hub_state(request).verifier.verify(token)
    request.state.principal = principal
    return principal


def require(permission: Permission) -> Callable[[Request], Principal]:
    """Dependency factory: authenticated and holding `permission`, else 401/403."""

    def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        principal.require(permission)
        return principal

    dependency.__name__ = f"require_{permission.name.lower()}"
    return dependency


def is_audited_request(request: Request) -> bool:
    return (
        request.method in STATE_CHANGING
        or request.url.path.endswith("/file")
        or bool(getattr(request.state, "audit_read", False))
    )


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
    hub_state(request).catalog.audit.record(
        subject=principal.subject if principal else "anonymous",
        action=action,
        resource=resource,
        outcome=outcome,
        client=client_address(request),
        detail=detail,
    )


def mark_audited_read(request: Request, action: str, resource: str) -> None:
    """Flag a read (image bytes) so that a refusal of it is audited too."""
    request.state.audit_read = True
    request.state.audit_action = action
    request.state.audit_resource = resource
