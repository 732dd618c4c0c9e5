"""RFC 9457 problem details for every error the hub returns, and audit events for refused requests."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medcloud.errors import MedcloudError

log = logging.getLogger("medcloud.hub")
PROBLEM_BASE = "https://medcloud.invalid/problems/"


def problem_body(exc: MedcloudError) -> dict[str, Any]:
    """The problem details of one error, without `instance` (as each failed file of a batch carries)."""
    return {"type": PROBLEM_BASE + exc.type_slug, "title": exc.title, "status": exc.status, "detail": exc.detail}


def problem(status: int, slug: str, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail, "instance": instance}
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="medcloud"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def _audit_refusal(request: Request, status: int, slug: str, detail: str) -> None:
    """State-changing requests and byte reads are audited whatever their outcome."""
    from medcloud.hub.deps import is_audited_request, record_audit

    if not is_audited_request(request):
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


def install(app: FastAPI) -> None:
    @app.exception_handler(MedcloudError)
    async def _medcloud_error(request: Request, exc: MedcloudError) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(_audit_refusal, request, exc.status, exc.type_slug, exc.detail)
        return problem(exc.status, exc.type_slug, exc.title, exc.detail, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", "")}
            for e in exc.errors()  # keep it JSON-safe
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(400, "invalid-input", "Invalid input", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(exc.status_code, slug, str(exc.detail), str(exc.detail), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal-error", "Internal error", "the hub failed; see its log", request.url.path)
