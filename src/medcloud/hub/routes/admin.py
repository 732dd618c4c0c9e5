"""Administration of the deployment itself: the MHLW self-check over the running hub (`security.selfcheck`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from medcloud.hub.deps import hub_state, record_audit, require
from medcloud.security.policy import Permission, Principal

router = APIRouter(tags=["admin"])
STYLESHEET = "/static/selfcheck.css"


def _wants_html(accept: str) -> bool:
    """HTML only when the client prefers it to JSON (a browser); JSON otherwise, also for `*/*`."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            if f.lower().startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        weights[media] = max(weights.get(media, 0.0), q)
    html = weights.get("text/html", 0.0)
    json_q = max(weights.get("application/json", 0.0), weights.get("application/*", 0.0), weights.get("*/*", 0.0))
    return html > 0 and html >= json_q


@router.get(
    "/api/v1/admin/self-check",
    summary="The MHLW guideline self-check of this deployment (JSON, or HTML with Accept: text/html)",
    responses={
        200: {
            "description": "The report (`medcloud audit self-check`'s JSON, or the same as one HTML page)",
            "content": {"application/json": {"schema": {"type": "object"}}, "text/html": {}},
        }
    },
)
async def self_check(request: Request, principal: Principal = Depends(require(Permission.SELF_CHECK))) -> Any:
    from medcloud.security.selfcheck import FAIL, render_html, run_self_check

    state = hub_state(request)
    report = await run_in_threadpool(run_self_check, state.settings, state.catalog)
    as_html = _wants_html(request.headers.get("accept", ""))
    failed = [i["id"] for i in report["items"] if i["status"] == FAIL]
    await run_in_threadpool(
        record_audit, request, principal, action="admin.self-check", resource="deployment", outcome="ok",
        detail={"ok": report["ok"], "summary": report["summary"], "failed": failed,
                "format": "html" if as_html else "json"},
    )  # fmt: skip
    if as_html:
        return Response(render_html(report, stylesheet=STYLESHEET), media_type="text/html; charset=utf-8")
    result: dict[str, Any] = report
    return result
