"""Report text from sites (already de-identified there) and the findings the hub extracts from it.

`POST /api/v1/reports` takes a JSON list of `{"study_uid", "patient", "text", "date"}` from a site
token, refuses anything that does not look de-identified, extracts findings (`medcloud.nlp`) and
stores report and findings once (a resend is a duplicate). `GET /api/v1/studies/{uid}/reports`
reads them back for the projects a token is granted.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from medcloud.errors import Forbidden, InvalidInput, NotFound, TooLarge
from medcloud.hub.deps import client_address, hub_state, mark_audited_read, record_audit, require
from medcloud.security.policy import Permission, Principal
from medcloud.store.queries import FindingFilter

router = APIRouter(tags=["reports"])

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_REPORTS = 1000
MAX_TEXT_CHARS = 100_000
# What the site's Pseudonymizer makes: a 2.25 UUID-derived UID and MC + base32 of 80 bits.
REMAPPED_UID = re.compile(r"^2\.25\.(0|[1-9][0-9]{0,38})$")
PSEUDONYM = re.compile(r"^MC[A-Z2-7]{16}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ReportIn(BaseModel):
    """One de-identified report as a site sends it."""

    model_config = ConfigDict(extra="forbid")

    study_uid: str = Field(..., max_length=64)
    patient: str = Field(..., max_length=64)
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS)
    date: dt.date | None = None


_BATCH = TypeAdapter(list[ReportIn])


def _project_for(principal: Principal, requested: str | None) -> str:
    """The project reports go to: the one named (and granted), else the token's only project."""
    if requested:
        if requested not in principal.projects:
            raise Forbidden(f"this site token may not send into project '{requested}'")
        return requested
    if len(principal.projects) == 1:
        return next(iter(principal.projects))
    raise InvalidInput("this token has several projects: name one in X-Medcloud-Project")


def still_identifying(text: str) -> list[str]:
    """Kinds of shaped identifier (phone, e-mail, ID, address...) the site's cleaner would have removed."""
    from medcloud.deid.freetext.patterns import find_shaped, fold

    return sorted({kind for _s, _e, kind, _r in find_shaped(fold(text), "keep", 0)})


def _check_deidentified(items: list[ReportIn]) -> None:
    """Refuse the whole batch if any report is not in the shape site de-identification gives."""
    for i, item in enumerate(items):
        if not REMAPPED_UID.match(item.study_uid):
            raise InvalidInput(
                f"report {i}: study_uid is not a remapped UID (2.25.<integer>); de-identify reports at the site "
                "with the images' key (`medcloud gateway reports`)"
            )
        if not PSEUDONYM.match(item.patient):
            raise InvalidInput(f"report {i}: patient is not a site pseudonym (MC + 16 base32 characters)")
        if _CONTROL.search(item.text):
            # PostgreSQL cannot store NUL in text, and no report needs control characters.
            raise InvalidInput(f"report {i}: text holds control characters")
        kinds = still_identifying(item.text)
        if kinds:
            # Never echo the text: it is what may identify someone.
            raise InvalidInput(f"report {i}: text still holds identifiers ({', '.join(kinds)}); clean it at the site")


def parse_findings(values: list[str]) -> tuple[FindingFilter, ...]:
    """`code[:status]` (status defaults to present), prefixed with '-' or '!' to negate: AND of them all."""
    from medcloud.nlp import CODES, STATUSES

    out: list[FindingFilter] = []
    for raw in values:
        v = raw.strip()
        negate = v[:1] in ("-", "!")
        code, _, status = (v[1:] if negate else v).partition(":")
        code, status = code.strip().lower(), (status.strip().lower() or "present")
        if code not in CODES:
            raise InvalidInput(f"finding {raw!r}: unknown code {code!r} (known: {', '.join(CODES)})")
        if status not in STATUSES:
            raise InvalidInput(f"finding {raw!r}: status must be one of {', '.join(STATUSES)}")
        out.append(FindingFilter(code, status, negate))
    return tuple(out)


def _findings_of(text: str) -> list[tuple[str, str]]:
    from medcloud.nlp import extract_findings

    return sorted({(f.code, f.status) for f in extract_findings(text)})


@router.post(
    "/api/v1/reports",
    summary="Send de-identified reports (a JSON list); findings are extracted and indexed",
    responses={
        201: {"description": "At least one report was stored"},
        200: {"description": "Nothing new: every report was a duplicate or rejected"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "array", "items": ReportIn.model_json_schema()}}},
        }
    },
)
async def post_reports(request: Request, principal: Principal = Depends(require(Permission.INGEST))) -> JSONResponse:
    request.state.audit_action = "report.ingest"
    if principal.site is None:
        raise Forbidden("only a site token may send reports")
    project = _project_for(principal, request.headers.get("x-medcloud-project"))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge(f"a report batch of {declared} bytes exceeds {MAX_BODY_BYTES} bytes; send fewer reports")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise TooLarge(f"a report batch may hold at most {MAX_BODY_BYTES} bytes; send fewer reports")
    try:
        items = _BATCH.validate_json(bytes(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInput(f"not a JSON list of reports: {where}: {first.get('msg', '')}".replace(": :", ":")) from None
    if not items:
        raise InvalidInput("an empty list of reports")
    if len(items) > MAX_REPORTS:
        raise InvalidInput(f"{len(items)} reports in one request; at most {MAX_REPORTS}")
    _check_deidentified(items)
    state = hub_state(request)
    cat = state.catalog
    site = principal.site
    client = client_address(request)

    def store() -> list[Any]:
        from medcloud.store.reports import ReportEntry

        entries = [
            ReportEntry(i.study_uid, i.patient, i.text, i.date, _findings_of(i.text)) for i in items
        ]  # extraction runs before the write lock is taken
        with cat.write() as conn:
            cat.reports.store(conn, entries, site=site, project=project)
            counts = {s: sum(e.status == s for e in entries) for s in ("stored", "duplicate", "rejected")}
            cat.audit.append(
                conn,
                subject=principal.subject,
                action="report.ingest",
                resource=f"project/{project}/reports",
                outcome="ok",
                client=client,
                detail={
                    **counts,
                    "reports": [e.id for e in entries if e.status == "stored"][:100],
                    "studies": sorted({e.study_uid for e in entries})[:100],
                },
            )
        return entries

    entries = await run_in_threadpool(store)
    out = [
        {"index": n, "status": e.status, "id": e.id, "study_uid": e.study_uid,
         "findings": [{"code": c, "status": s} for c, s in e.findings], **({"reason": e.reason} if e.reason else {})}
        for n, e in enumerate(entries)
    ]  # fmt: skip
    counts = {s: sum(e.status == s for e in entries) for s in ("stored", "duplicate", "rejected")}
    return JSONResponse({**counts, "project": project, "items": out}, status_code=201 if counts["stored"] else 200)


@router.get("/api/v1/studies/{study_uid}/reports", summary="A study's reports and their findings (audited)")
async def study_reports(
    request: Request, study_uid: str, principal: Principal = Depends(require(Permission.CATALOG_READ))
) -> dict[str, Any]:
    mark_audited_read(request, "report.read", f"study/{study_uid}/reports")
    cat = hub_state(request).catalog
    projects = principal.readable_projects()
    items = await run_in_threadpool(cat.reports.for_study, study_uid, projects)
    if not items:
        try:
            await run_in_threadpool(cat.query.get_study, study_uid, projects)
        except NotFound:
            raise NotFound(f"study {study_uid} not found") from None
    await run_in_threadpool(
        record_audit, request, principal, action="report.read", resource=f"study/{study_uid}/reports", outcome="ok",
        detail={"reports": [i["id"] for i in items][:100]},
    )  # fmt: skip
    return {"study_uid": study_uid, "items": items}


__all__ = ["ReportIn", "parse_findings", "router", "still_identifying"]
