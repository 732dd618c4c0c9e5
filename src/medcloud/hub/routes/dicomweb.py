"""DICOMweb (PS3.18) at /dicom-web: QIDO-RS search, WADO-RS retrieve and metadata, STOW-RS store.

Same tokens, grants and audit as the REST API: researchers search and retrieve within their projects,
sites store. Parsing, DICOM JSON and negotiation live in `medcloud.dicomweb`; SQL in `store.dicomweb`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import uuid
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from medcloud.dicomweb import json as dj
from medcloud.dicomweb.frames import (
    EXPLICIT_LE,
    check_decodable,
    explicit_le_file,
    parse_frame_list,
    plan_frames,
    read_frames,
)
from medcloud.dicomweb.media import Offer, negotiate, parse_accept, parse_media_type
from medcloud.dicomweb.multipart import Part, closing, new_boundary, part_header, split_parts
from medcloud.dicomweb.query import Level, check_path_uid, parse_qido
from medcloud.dicomweb.stow import StowOutcome, store_parts
from medcloud.errors import Forbidden, InvalidInput, NotFound, TooLarge, UnsupportedFormat
from medcloud.formats.dicomjson import bulk_split, file_json, join_with_base, pack_stored, unpack_stored
from medcloud.hub.deps import client_address, hub_state, mark_audited_read, record_audit, require
from medcloud.hub.openapi import media
from medcloud.hub.problems import problem
from medcloud.ingest.metadata import frames_uri
from medcloud.security.policy import Permission, Principal
from medcloud.store.db import ReadOverBudget
from medcloud.store.dicomweb import DicomwebQueries

router = APIRouter(prefix="/dicom-web", tags=["dicomweb"])
DICOM_JSON = "application/dicom+json"
_JSON_OFFERS = [Offer(DICOM_JSON), Offer("application/json")]
# What each family of routes answers on success (documented in the OpenAPI description).
_JSON_DOC = media(DICOM_JSON, "application/json")
_WADO_DOC = media("multipart/related")
_STOW_DOC = {
    **media(DICOM_JSON, "application/json", description="Every instance stored"),
    **media(DICOM_JSON, "application/json", status=202, description="Some instances stored, some refused"),
    **media(DICOM_JSON, "application/json", status=409, description="No instance stored (see FailedSOPSequence)"),
}
_METADATA = dj.MetadataCache()  # keyed by content hash: shared by every caller once their access is checked
_STORED_JSON = dj.StoredJsonCache()  # the same, for the DICOM JSON stored at ingest


# How long a QIDO search may run on the event loop (SQLite) before it is stopped and run in a worker thread.
INLINE_SEARCH_BUDGET_S = 0.002


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicom-web"


def _queries(request: Request) -> DicomwebQueries:
    return DicomwebQueries(hub_state(request).catalog.db)


def _dicom_json(body: Any, offer: Offer, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A DICOM JSON answer (strings and integers only: a STOW-RS response dataset), written by orjson."""
    return Response(dj.json_bytes(body), status_code=status, media_type=offer.media_type, headers=headers)


# ---------------------------------------------------------------- QIDO-RS


async def _search(request: Request, principal: Principal, level: Level, **fixed: str) -> Response:
    offer, _ = negotiate(parse_accept(request.headers.get("accept")), _JSON_OFFERS, what="a search result")
    query = parse_qido(level, request.query_params.multi_items(), fixed=fixed)
    queries, projects = _queries(request), principal.readable_projects()
    rows = None
    if queries.inline_reads:
        # On SQLite most searches end in tens of microseconds: run here unless it takes longer than the budget
        # (then it is stopped and run in a worker thread like any other read).
        with contextlib.suppress(ReadOverBudget):
            rows = queries.search(query, projects, budget_s=INLINE_SEARCH_BUDGET_S)
    elif queries.async_reads:  # PostgreSQL: awaited on the loop, no worker thread
        rows = await queries.search_async(query, projects)
    if rows is None:
        rows = await run_in_threadpool(queries.search, query, projects)
    if "StudyInstanceUID" in fixed and not rows:
        # A nested search under a study the caller cannot see is 404, as a retrieve would be.
        await run_in_threadpool(queries.retrieve, projects, fixed["StudyInstanceUID"])
    base = _base(request)
    headers = {"Warning": f'299 medcloud "{"; ".join(query.warnings)}"'} if query.warnings else None
    # orjson's text of the datasets: the bytes JSONResponse's json.dumps would write, in a tenth of the time.
    return Response(dj.qido_results_json(query, rows, base), media_type=offer.media_type, headers=headers)


Reader = Depends(require(Permission.CATALOG_READ))
BytesReader = Depends(require(Permission.BYTES_READ))
_require_ingest = require(Permission.INGEST)
Storer = Depends(_require_ingest)


@router.get("/studies", response_class=Response, responses=_JSON_DOC, summary="QIDO-RS: search for studies")
async def search_studies(request: Request, principal: Principal = Reader) -> Response:
    return await _search(request, principal, Level.STUDY)


@router.get("/series", response_class=Response, responses=_JSON_DOC, summary="QIDO-RS: search for series")
async def search_series(request: Request, principal: Principal = Reader) -> Response:
    return await _search(request, principal, Level.SERIES)


@router.get("/instances", response_class=Response, responses=_JSON_DOC, summary="QIDO-RS: search for instances")
async def search_instances(request: Request, principal: Principal = Reader) -> Response:
    return await _search(request, principal, Level.INSTANCE)


@router.get(
    "/studies/{study}/series",
    response_class=Response,
    responses=_JSON_DOC,
    summary="QIDO-RS: search for series of a study",
)
async def search_study_series(request: Request, study: str, principal: Principal = Reader) -> Response:
    return await _search(request, principal, Level.SERIES, StudyInstanceUID=study)


@router.get(
    "/studies/{study}/instances",
    response_class=Response,
    responses=_JSON_DOC,
    summary="QIDO-RS: search for instances of a study",
)
async def search_study_instances(request: Request, study: str, principal: Principal = Reader) -> Response:
    return await _search(request, principal, Level.INSTANCE, StudyInstanceUID=study)


@router.get(
    "/studies/{study}/series/{series}/instances",
    response_class=Response,
    responses=_JSON_DOC,
    summary="QIDO-RS: search for instances of a series",
)
async def search_series_instances(request: Request, study: str, series: str, principal: Principal = Reader) -> Response:
    return await _search(request, principal, Level.INSTANCE, StudyInstanceUID=study, SeriesInstanceUID=series)


# ---------------------------------------------------------------- WADO-RS


def _resource(study: str, series: str | None, instance: str | None) -> str:
    path = f"study/{study}"
    if series is not None:
        path += f"/series/{series}"
    if instance is not None:
        path += f"/instance/{instance}"
    return path


async def _covered(
    request: Request,
    principal: Principal,
    action: str,
    study: str,
    series: str | None,
    instance: str | None,
    *,
    json_kept: bool = False,
) -> list[dict[str, Any]]:
    """The instances a retrieve covers (NotFound outside the caller's projects), flagged for audit
    (with `json_kept`: and whether each one's DICOM JSON is stored)."""
    mark_audited_read(request, action, _resource(study, series, instance))
    for value, what in ((study, "study"), (series, "series"), (instance, "instance")):
        if value is not None:
            check_path_uid(value, what)
    rows = await run_in_threadpool(
        partial(_queries(request).retrieve, json_kept=json_kept), principal.readable_projects(), study, series, instance
    )
    return rows


async def _audit_read(request: Request, principal: Principal, action: str, rows: list[dict[str, Any]],
                      resource: str, **detail: Any) -> None:  # fmt: skip
    """Check that every blob is there, then audit the read: a missing blob is never recorded as read."""
    blobs = hub_state(request).blobs

    def check() -> None:
        missing = set(blobs.missing([r["sha256"] for r in rows]))
        for r in rows:
            if r["sha256"] in missing:
                raise NotFound(f"the bytes of instance {r['sop_uid']} are missing from the blob store")
        record_audit(request, principal, action=action, resource=resource, outcome="ok",
                     detail={"instances": len(rows), "project": rows[0]["project"], **detail})  # fmt: skip

    await run_in_threadpool(check)


async def _retrieve(
    request: Request, principal: Principal, study: str, series: str | None = None, instance: str | None = None
) -> Response:
    action = "dicomweb.retrieve"
    accept = parse_accept(request.headers.get("accept"))
    rows = await _covered(request, principal, action, study, series, instance)
    syntaxes = {r["transfer_syntax"] for r in rows}
    # A named transfer syntax is served when every instance is stored in it, or when it is Explicit VR
    # Little Endian: the others are then re-encoded, compressed pixel data decoded (frames.explicit_le_file).
    offer_ts = (frozenset(syntaxes) if len(syntaxes) == 1 else frozenset()) | {EXPLICIT_LE}
    offers = [Offer("multipart/related", "application/dicom", offer_ts)]
    _, chosen = negotiate(accept, offers, what="a retrieve")
    transcode = chosen.params.get("transfer-syntax") == EXPLICIT_LE and syntaxes != {EXPLICIT_LE}
    if transcode:
        check_decodable(syntaxes)
    await _audit_read(request, principal, action, rows, _resource(study, series, instance))
    boundary = new_boundary()
    blobs = hub_state(request).blobs
    base = _base(request)

    def body() -> Iterator[bytes]:
        for r in rows:
            location = f"{base}/studies/{r['study_uid']}/series/{r['series_uid']}/instances/{r['sop_uid']}"
            if transcode and r["transfer_syntax"] != EXPLICIT_LE:
                with blobs.open(r["sha256"]) as fh:
                    data = explicit_le_file(fh)
                yield part_header(boundary, f"application/dicom; transfer-syntax={EXPLICIT_LE}",
                                  [("Content-Location", location), ("Content-Length", str(len(data)))])  # fmt: skip
                yield data
                continue
            yield part_header(boundary, f"application/dicom; transfer-syntax={r['transfer_syntax']}",
                              [("Content-Location", location), ("Content-Length", str(r["size"]))])  # fmt: skip
            yield from blobs.iter_chunks(r["sha256"])
        yield closing(boundary)

    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return StreamingResponse(body(), media_type=media)


@router.get(
    "/studies/{study}",
    response_class=Response,
    responses=_WADO_DOC,
    summary="WADO-RS: retrieve a study (multipart/related application/dicom)",
)
async def retrieve_study(request: Request, study: str, principal: Principal = BytesReader) -> Response:
    return await _retrieve(request, principal, study)


@router.get(
    "/studies/{study}/series/{series}",
    response_class=Response,
    responses=_WADO_DOC,
    summary="WADO-RS: retrieve a series",
)
async def retrieve_series(request: Request, study: str, series: str, principal: Principal = BytesReader) -> Response:
    return await _retrieve(request, principal, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    response_class=Response,
    responses=_WADO_DOC,
    summary="WADO-RS: retrieve an instance",
)
async def retrieve_instance(
    request: Request, study: str, series: str, instance: str, principal: Principal = BytesReader
) -> Response:
    return await _retrieve(request, principal, study, series, instance)


def _frames_path(r: dict[str, Any]) -> str | None:
    """The frames of a catalog row relative to the DICOMweb base, as `ingest.metadata.frames_path` says."""
    return frames_uri(r["study_uid"], r["series_uid"], r["sop_uid"], r["rows"], r["frames"])


def _metadata_body(queries: DicomwebQueries, blobs: Any, rows: list[dict[str, Any]], base: str) -> bytes:
    """The DICOM JSON array of `rows` (read with `json_kept`): stored JSON joined, the base filled into its
    BulkDataURIs.

    Files stored before JSON was converted at ingest are converted now and kept (lazy backfill); one our
    converter refuses is converted by pydicom, per request (cached by content hash).
    """
    # Inflated bodies held in memory are used only while their row is still stored (`json_kept`, read with
    # the rows), so a row that went missing is converted and kept again exactly as without the cache.
    texts = _STORED_JSON.get_many(r["sha256"] for r in rows if r["json_kept"])
    stored = queries.instance_json([r["sha256"] for r in rows if r["sha256"] not in texts])
    prefix = (base + "/").encode("utf-8")
    parts: list[tuple[bytes, ...]] = []  # each document cut where the base goes (`bulk_split`)
    backfill: list[tuple[str, bytes]] = []
    for r in rows:
        pieces = texts.get(r["sha256"])
        if pieces is not None:
            parts.append(pieces)
            continue
        sealed = stored.get(r["sha256"])
        body = None if sealed is None else blobs.open_value(r["sha256"], sealed)
        if body is None:
            path = _frames_path(r)
            try:
                text = file_json(blobs.read_bytes(r["sha256"]), path)
            except (InvalidInput, UnsupportedFormat):
                # Relative, like the stored JSON: the base is filled into the whole answer below.
                parts.append(bulk_split(json.dumps(
                    _METADATA.metadata(r["sha256"], partial(blobs.open, r["sha256"]), path),
                    ensure_ascii=False, separators=(",", ":")).encode("utf-8")))  # fmt: skip
                continue
            body = pack_stored(text)
            stored[r["sha256"]] = blobs.seal_value(r["sha256"], body)
            backfill.append((r["sha256"], stored[r["sha256"]]))
        parts.append(bulk_split(unpack_stored(body)))
        _STORED_JSON.put(r["sha256"], parts[-1])
    queries.keep_instance_json(backfill)
    # The same bytes as `with_base` of the joined array, in one copy instead of a search and a copy.
    return join_with_base(parts, prefix)


async def _metadata(
    request: Request, principal: Principal, study: str, series: str | None = None, instance: str | None = None
) -> Response:
    action = "dicomweb.metadata"
    offer, _ = negotiate(parse_accept(request.headers.get("accept")), _JSON_OFFERS, what="metadata")
    rows = await _covered(request, principal, action, study, series, instance, json_kept=True)
    # The audit event is committed while the body is put together (each in a worker thread): nothing is
    # sent before both are done, and a refused audit (a missing blob, a failed commit) wins over the body.
    audited, body = await asyncio.gather(
        _audit_read(request, principal, action, rows, _resource(study, series, instance)),
        run_in_threadpool(_metadata_body, _queries(request), hub_state(request).blobs, rows, _base(request)),
        return_exceptions=True,
    )
    for outcome in (audited, body):
        if isinstance(outcome, BaseException):
            raise outcome
    assert isinstance(body, bytes)
    return Response(body, media_type=offer.media_type)


@router.get(
    "/studies/{study}/metadata",
    response_class=Response,
    responses=_JSON_DOC,
    summary="WADO-RS: metadata of a study (DICOM JSON)",
)
async def study_metadata(request: Request, study: str, principal: Principal = BytesReader) -> Response:
    return await _metadata(request, principal, study)


@router.get(
    "/studies/{study}/series/{series}/metadata",
    response_class=Response,
    responses=_JSON_DOC,
    summary="WADO-RS: metadata of a series",
)
async def series_metadata(request: Request, study: str, series: str, principal: Principal = BytesReader) -> Response:
    return await _metadata(request, principal, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    response_class=Response,
    responses=_JSON_DOC,
    summary="WADO-RS: metadata of an instance",
)
async def instance_metadata(
    request: Request, study: str, series: str, instance: str, principal: Principal = BytesReader
) -> Response:
    return await _metadata(request, principal, study, series, instance)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    response_class=Response,
    responses=_WADO_DOC,
    summary="WADO-RS: frames of an instance (native pixel data, multipart/related application/octet-stream)",
)
async def retrieve_frames(
    request: Request, study: str, series: str, instance: str, frames: str, principal: Principal = BytesReader
) -> Response:
    action = "dicomweb.frames"
    accept = parse_accept(request.headers.get("accept"))
    numbers = parse_frame_list(frames)
    rows = await _covered(request, principal, action, study, series, instance)
    r = rows[0]
    if r["rows"] is None:
        raise NotFound(f"instance {instance} has no pixel data")
    stored_ts = r["transfer_syntax"]
    plan = plan_frames(stored_ts, accept)  # as stored, sliced, or decoded (see frames.plan_frames)
    blobs = hub_state(request).blobs

    def read() -> list[bytes]:
        with blobs.open(r["sha256"]) as fh:
            return read_frames(fh, stored_ts, numbers, plan)

    data = await run_in_threadpool(read)
    await _audit_read(request, principal, action, rows, _resource(study, series, instance), frames=frames[:200])
    boundary = new_boundary()
    chunks: list[bytes] = []
    location = f"{_base(request)}/studies/{study}/series/{series}/instances/{instance}/frames"
    for n, frame in zip(numbers, data, strict=True):
        chunks.append(part_header(boundary, f"{plan.part_type}; transfer-syntax={plan.transfer_syntax}",
                                  [("Content-Location", f"{location}/{n}")]))  # fmt: skip
        chunks.append(frame)
    chunks.append(closing(boundary))
    media = f'multipart/related; type="{plan.part_type}"; boundary={boundary}'
    return Response(b"".join(chunks), media_type=media)


# ---------------------------------------------------------------- STOW-RS


def _store_body(
    store: Callable[[list[Part]], StowOutcome], body: bytes, spill: Path | None, boundary: bytes
) -> StowOutcome:
    """Split the body (in memory, or the mapped spill file) and store its parts."""
    if spill is None:
        return store(_parts_of(body, boundary))
    with open(spill, "rb") as fh:
        if not fh.seek(0, 2):
            raise InvalidInput("the request holds no instances")
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    parts: list[Part] = []
    try:
        parts = _parts_of(mapped, boundary)
        return store(parts)
    finally:
        for part in parts:
            part.data.release()
        with contextlib.suppress(BufferError):  # a view still held elsewhere: the mapping goes with it
            mapped.close()


def _parts_of(body: bytes | mmap.mmap, boundary: bytes) -> list[Part]:
    parts = list(split_parts(body, boundary))
    if not parts:
        raise InvalidInput("the request holds no instances")
    return parts


def _store_scope(request: Request, principal: Principal) -> tuple[str, str]:
    """The site (from the token, never the request) and project a STOW-RS request stores into."""
    if principal.site is None:
        raise Forbidden("only a site token may store")
    requested = request.headers.get("x-medcloud-project")
    if requested:
        if requested not in principal.projects:
            raise Forbidden(f"this site token may not store into project '{requested}'")
        return principal.site, requested
    if len(principal.projects) == 1:
        return principal.site, next(iter(principal.projects))
    raise InvalidInput("this token has several projects: name one in X-Medcloud-Project")


async def _stow(request: Request, principal: Principal, study: str | None) -> Response:
    state = hub_state(request)
    request.state.audit_action = "dicomweb.store"
    site, project = _store_scope(request, principal)
    if study is not None:
        check_path_uid(study, "study")
    offer, _ = negotiate(parse_accept(request.headers.get("accept")), _JSON_OFFERS, what="a store response")
    ctype = parse_media_type(request.headers.get("content-type") or "application/octet-stream")
    if ctype.essence != "multipart/related" or not ctype.params.get("boundary"):
        raise UnsupportedFormat('send multipart/related; type="application/dicom" with a boundary')
    part_type = ctype.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise UnsupportedFormat(f"parts of type {part_type!r} are not stored yet: send application/dicom parts")
    limit = state.settings.max_batch_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request of {declared} bytes exceeds the limit of {limit} bytes")
    boundary = ctype.params["boundary"].encode("latin-1")
    memory = state.settings.batch_memory_bytes
    # A body that may not fit the request's memory budget is received into a file and mapped.
    spill = (
        None if declared.isdigit() and int(declared) <= memory else state.blobs.incoming / f"{uuid.uuid4().hex}.stow"
    )
    chunks: list[bytes] = []
    received = 0
    try:
        with open(spill, "wb") if spill is not None else contextlib.nullcontext() as out:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise TooLarge(f"request exceeds the limit of {limit} bytes")
                if out is None:
                    chunks.append(chunk)
                else:
                    await run_in_threadpool(out.write, chunk)
        if declared.isdigit() and received != int(declared):
            raise InvalidInput(f"truncated request: Content-Length {declared}, received {received} bytes")
        store = partial(store_parts, state.ingestor, state.blobs, site=site, project=project,
                        subject=principal.subject, client=client_address(request), study_uid=study,
                        max_part=state.settings.max_upload_bytes, memory=memory, base=_base(request),
                        max_files=state.settings.max_batch_files)  # fmt: skip
        outcome: StowOutcome = await run_in_threadpool(_store_body, store, b"".join(chunks), spill, boundary)
    finally:
        if spill is not None:
            spill.unlink(missing_ok=True)
    if outcome.refused_early:  # the pipeline audits what it saw; these parts never reached it
        catalog = state.catalog

        def audit() -> None:
            with catalog.write() as conn:
                catalog.audit.chain(conn).append_many(outcome.refused_early)

        await run_in_threadpool(audit)
    return _dicom_json(outcome.body, offer, status=outcome.status)


async def _stow_endpoint(request: Request) -> Response:
    """STOW-RS as a plain Starlette endpoint: the same check as the `Storer` dependency, called directly.

    An upload has no parameters for FastAPI to solve, validate or serialise: matched before the routes
    below (which stay for the API description), it skips that machinery on every request. Everything
    else is the same: `require` authenticates and authorises (or raises), refusals go through the app's
    exception handlers and are audited, and the middlewares (body limits, security headers) wrap it.
    """
    principal = await _require_ingest(request)
    return await _stow(request, principal, request.path_params.get("study"))


# Tried before every other route of the app (the documented ones included, see PLAIN_ROUTES): POST only (any
# other method falls through to them); first, so that an upload is not matched against the read routes' patterns.
PLAIN_ROUTES: list[Route] = [
    Route(router.prefix + "/studies", _stow_endpoint, methods=["POST"], include_in_schema=False),
    Route(router.prefix + "/studies/{study}", _stow_endpoint, methods=["POST"], include_in_schema=False),
]


@router.post(
    "/studies",
    response_class=Response,
    responses=_STOW_DOC,
    summary="STOW-RS: store instances (multipart/related application/dicom)",
)
async def store_instances(request: Request, principal: Principal = Storer) -> Response:
    return await _stow(request, principal, None)


@router.post(
    "/studies/{study}", response_class=Response, responses=_STOW_DOC, summary="STOW-RS: store instances of one study"
)
async def store_study_instances(request: Request, study: str, principal: Principal = Storer) -> Response:
    return await _stow(request, principal, study)


# ---------------------------------------------------------------- 405 with Allow

_ALLOWED: dict[str, tuple[str, ...]] = {
    "/studies": ("GET", "POST"),
    "/studies/{study}": ("GET", "POST"),
    "/series": ("GET",),
    "/instances": ("GET",),
    "/studies/{study}/series": ("GET",),
    "/studies/{study}/instances": ("GET",),
    "/studies/{study}/metadata": ("GET",),
    "/studies/{study}/series/{series}": ("GET",),
    "/studies/{study}/series/{series}/metadata": ("GET",),
    "/studies/{study}/series/{series}/instances": ("GET",),
    "/studies/{study}/series/{series}/instances/{instance}": ("GET",),
    "/studies/{study}/series/{series}/instances/{instance}/metadata": ("GET",),
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}": ("GET",),
}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _not_allowed(allow: tuple[str, ...]) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        detail = f"{request.method} is not allowed here; allowed: {', '.join(allow)}"
        response = problem(405, "method-not-allowed", "Method not allowed", detail, request.url.path)
        response.headers["Allow"] = ", ".join(allow)
        return response

    return handler


for _path, _allow in _ALLOWED.items():
    router.add_api_route(
        _path, _not_allowed(_allow), methods=[m for m in _METHODS if m not in _allow], include_in_schema=False
    )


# ---------------------------------------------------------------- plain endpoints for reads


def _plain_read(
    route: Callable[..., Awaitable[Response]], check: Callable[[Request], Awaitable[Principal]], path: str
) -> Any:
    """A plain Starlette endpoint for a documented read route: the route's own `require` check, awaited
    directly, then the route function with its path parameters (all strings, as FastAPI passes them).

    A QIDO or metadata request has nothing for FastAPI to solve but that check: matched before the
    documented routes (which stay for the API description), it skips the dependency machinery, as
    STOW-RS's plain endpoint does. Refusals go through the same exception handlers and are audited.
    HEAD gets the 405 the documented routes give it (FastAPI re-creates an included Starlette route,
    which then answers HEAD as well as GET).
    """
    head = _not_allowed(_ALLOWED[path])

    async def endpoint(request: Request) -> Response:
        if request.method != "GET":
            return head(request)
        principal = await check(request)
        return await route(request, principal=principal, **request.path_params)

    endpoint.__name__ = f"plain_{route.__name__}"
    return endpoint


_PLAIN_READS: tuple[tuple[str, Callable[..., Awaitable[Response]], Any], ...] = (
    ("/studies", search_studies, Reader),
    ("/series", search_series, Reader),
    ("/instances", search_instances, Reader),
    ("/studies/{study}/series", search_study_series, Reader),
    ("/studies/{study}/instances", search_study_instances, Reader),
    ("/studies/{study}/series/{series}/instances", search_series_instances, Reader),
    ("/studies/{study}/metadata", study_metadata, BytesReader),
    ("/studies/{study}/series/{series}/metadata", series_metadata, BytesReader),
    ("/studies/{study}/series/{series}/instances/{instance}/metadata", instance_metadata, BytesReader),
)
# The app puts PLAIN_ROUTES before every router it includes (`create_app`): matched there, a request also
# skips the included router's own matching (FastAPI wraps each included router in a layer of its own).
PLAIN_ROUTES += [
    Route(router.prefix + path, _plain_read(route, depends.dependency, path), methods=["GET"], include_in_schema=False)
    for path, route, depends in _PLAIN_READS
]
