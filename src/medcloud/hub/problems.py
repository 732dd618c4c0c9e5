"""RFC 9457 problem details for every error the hub returns, and audit events for refused requests."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from medcloud.errors import MedcloudError, RequestTimeout, TooManyAttempts

log = logging.getLogger("medcloud.hub")
PROBLEM_BASE = "https://medcloud.invalid/problems/"


def problem_body(exc: MedcloudError) -> dict[str, Any]:
    """The problem details of one error, without `instance` (as each failed file of a batch carries)."""
    return {"type": PROBLEM_BASE + exc.type_slug, "title": exc.title, "status": exc.status, "detail": exc.detail}


def problem(status: int, slug: str, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail, "instance": instance}
    body.update(extra)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="medcloud"'
    if status == RequestTimeout.status:
        # The rest of the body may still be on its way: do not read it as the next request.
        headers["Connection"] = "close"
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers or None)


def _audit_refusal(request: Request, status: int, slug: str, detail: str) -> None:
    """Every refused API request and state change is audited, reads included, whoever the caller."""
    from medcloud.hub.deps import is_audited_refusal, record_audit

    if not is_audited_refusal(request):
        return
    try:
        record_audit(
            request,
            getattr(request.state, "principal", None),
            action=getattr(request.state, "audit_action", None) or f"{request.method} {request.url.path}",
            resource=getattr(request.state, "audit_resource", None) or request.url.path,
            outcome=f"refused:{status}:{slug}",
            detail={"reason": detail[:300]},
        )
    except Exception:  # pragma: no cover - never mask the original error with an audit failure
        log.exception("could not audit a refused request")


def _check_caller(request: Request) -> None:
    """Run the matched route's permission checks (see `deps.require`) if they have not run yet."""
    from fastapi.dependencies.models import Dependant

    from medcloud.hub.deps import authorize

    if getattr(request.state, "principal", None) is not None:
        return
    root = getattr(request.scope.get("route"), "dependant", None)
    pending: list[Dependant] = [root] if isinstance(root, Dependant) else []
    while pending:
        dependant = pending.pop()
        for sub in dependant.dependencies:
            permission = getattr(sub.call, "permission", None)
            if permission is not None:
                authorize(request, permission)
            elif sub.call is not None and getattr(sub.call, "checks_caller", False):
                sub.call(request)
            pending.append(sub)


async def _refuse(request: Request, status: int, slug: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    await run_in_threadpool(_audit_refusal, request, status, slug, detail)
    return problem(status, slug, title, detail, request.url.path, **extra)


async def _caller_refused(request: Request) -> JSONResponse | None:
    """The refusal of the caller if it may not use the route, for errors raised before the route's checks.

    FastAPI reads and checks a JSON body before the route's security dependencies run: judging the
    caller first means an unauthenticated one hears 401 whatever it sent.
    """
    try:
        await run_in_threadpool(_check_caller, request)
    except MedcloudError as refused:
        return await _refuse(request, refused.status, refused.type_slug, refused.title, refused.detail)
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(MedcloudError)
    async def _medcloud_error(request: Request, exc: MedcloudError) -> JSONResponse:
        response = await _refuse(request, exc.status, exc.type_slug, exc.title, exc.detail)
        if isinstance(exc, TooManyAttempts):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (refused := await _caller_refused(request)) is not None:
            return refused
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", "")}
            for e in exc.errors()  # keep it JSON-safe
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return await _refuse(request, 400, "invalid-input", "Invalid input", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, MedcloudError) or exc.status_code == 400:
            # FastAPI turns any failure to read a JSON body (a timeout, a size limit) into a bare 400.
            if (refused := await _caller_refused(request)) is not None:
                return refused
            if isinstance(cause, MedcloudError):
                return await _refuse(request, cause.status, cause.type_slug, cause.title, cause.detail)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        answer = await _refuse(request, exc.status_code, slug, str(exc.detail), str(exc.detail))
        if exc.status_code == 405:
            # RFC 9110: a 405 lists the methods the resource has (Starlette names one route's, or none).
            from medcloud.hub.openapi import allowed_methods

            allow = allowed_methods(request.app, request.url.path) or (exc.headers or {}).get("Allow")
            if allow:
                answer.headers["Allow"] = allow
        return answer

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal-error", "Internal error", "the hub failed; see its log", request.url.path)
