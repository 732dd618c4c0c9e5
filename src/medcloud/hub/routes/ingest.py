"""Uploads from sites: one file per request (raw body), or many per request (multipart, group commit).

Bodies are hashed as they stream in, held in memory while small (a batch request holds at most
`batch_memory_bytes`) and spilled to disk when large; nothing is parsed until the bytes are complete.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from medcloud.errors import Forbidden, InvalidInput, MedcloudError, TooLarge, UnsupportedFormat
from medcloud.hub.deps import client_address, hub_state, require
from medcloud.hub.problems import PROBLEM_BASE
from medcloud.ingest.pipeline import UploadItem
from medcloud.security.policy import Permission, Principal
from medcloud.store.blobs import MemoryBudget, SpooledUpload

router = APIRouter(tags=["ingest"])
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _upload_scope(request: Request, principal: Principal) -> tuple[str, str]:
    """The site (from the token, never the request) and project an upload goes to."""
    if principal.site is None:
        raise Forbidden("only a site token may upload")
    claimed_site = request.headers.get("x-medcloud-site")
    if claimed_site and claimed_site != principal.site:
        raise Forbidden(f"this token uploads as site '{principal.site}', not '{claimed_site}'")
    return principal.site, _project_for(principal, request.headers.get("x-medcloud-project"))


def _content_length(request: Request) -> int | None:
    """The declared body length, or None when absent or not a number (chunked bodies)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


def _project_for(principal: Principal, requested: str | None) -> str:
    if requested:
        if requested not in principal.projects:
            raise Forbidden(f"this site token may not upload into project '{requested}'")
        return requested
    if len(principal.projects) == 1:
        return next(iter(principal.projects))
    raise InvalidInput("this token has several projects: name one in X-Medcloud-Project")


@router.post(
    "/api/v1/ingest",
    status_code=201,
    summary="Upload one de-identified DICOM or image file",
    responses={200: {"description": "Identical content was already stored (idempotent replay)"}},
)
async def ingest(request: Request, principal: Principal = Depends(require(Permission.INGEST))) -> JSONResponse:
    state = hub_state(request)
    limit = state.settings.max_upload_bytes
    request.state.audit_action = "ingest"
    site, project = _upload_scope(request, principal)
    declared = _content_length(request)
    if declared is not None and declared > limit:
        raise TooLarge(f"upload of {declared} bytes exceeds the limit of {limit} bytes")
    expected = request.headers.get("x-content-sha256")
    if expected is not None and not _HEX64.match(expected):
        raise InvalidInput("X-Content-SHA256 must be 64 hex digits")
    filename = request.headers.get("x-medcloud-filename", "")
    upload = state.blobs.spool(limit)
    try:
        async for chunk in request.stream():
            upload.write(chunk)
    except BaseException:
        upload.discard()
        raise
    if declared is not None and declared != upload.size:
        upload.discard()
        raise InvalidInput(f"truncated upload: Content-Length {declared}, received {upload.size} bytes")
    result = await run_in_threadpool(
        state.ingestor.ingest,
        upload,
        site=site,
        project=project,
        subject=principal.subject,
        client=client_address(request),
        filename=filename,
        expected_sha256=expected,
    )
    return JSONResponse(result.as_dict(), status_code=201 if result.status == "stored" else 200)


def _item_for(headers: dict[str, str], upload: SpooledUpload) -> UploadItem:
    """An upload item from one part's headers (lower-case names)."""
    expected = headers.get("x-content-sha256")
    if expected is not None and not _HEX64.match(expected):
        raise InvalidInput("X-Content-SHA256 of a part must be 64 hex digits")
    name = headers.get("x-medcloud-filename", "")
    if not name:
        m = re.search(r'filename="([^"]*)"', headers.get("content-disposition", ""))
        name = m.group(1) if m else ""
    return UploadItem(upload, name, expected)


_MAX_PART_HEADERS = 16 * 1024


def split_multipart(body: bytes, boundary: bytes) -> Iterator[tuple[dict[str, str], memoryview]]:
    """Split a complete multipart body (RFC 2046) into (headers, data) per part, without copying data.

    Used for bodies held in memory; the boundary search is `bytes.find`, so the cost is a scan of the
    body in C rather than a Python callback per chunk. Raises InvalidInput for a malformed body.
    """
    delim = b"--" + boundary
    view = memoryview(body)
    pos = body.find(delim)
    if pos < 0:
        raise InvalidInput("malformed multipart body: the boundary never appears")
    pos += len(delim)
    while True:
        if body.startswith(b"--", pos):
            return  # close delimiter; an epilogue is ignored
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise InvalidInput("malformed multipart body: text after a boundary")
        pos = eol + 2
        headers: dict[str, str] = {}
        if body.startswith(b"\r\n", pos):
            start = pos + 2
        else:
            hend = body.find(b"\r\n\r\n", pos, pos + _MAX_PART_HEADERS)
            if hend < 0:
                raise InvalidInput("malformed multipart body: part headers do not end (or exceed 16 KiB)")
            for line in body[pos:hend].split(b"\r\n"):
                name, sep, value = line.partition(b":")
                if not sep:
                    raise InvalidInput("malformed multipart body: a part header line without ':'")
                headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
            start = hend + 4
        end = body.find(b"\r\n" + delim, start)
        if end < 0:
            raise InvalidInput("malformed multipart body: the last part has no closing boundary (truncated?)")
        yield headers, view[start:end]
        pos = end + 2 + len(delim)


class _PartCollector:
    """Receives multipart parts from python-multipart's streaming parser into spooled uploads."""

    def __init__(self, spool: Any, max_part: int, max_parts: int) -> None:
        self._spool = spool
        self._max_part = max_part
        self._max_parts = max_parts
        self.items: list[UploadItem] = []
        self._field = b""
        self._value = b""
        self._headers: dict[str, str] = {}
        self._current: UploadItem | None = None
        self.failure: MedcloudError | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: setattr(self, "_field", self._field + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "_value", self._value + d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
        }

    def _begin(self) -> None:
        if len(self.items) >= self._max_parts:
            raise InvalidInput(f"a batch holds at most {self._max_parts} files")
        self._headers = {}
        self._current = None

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1").strip()
        self._field = self._value = b""

    def _headers_done(self) -> None:
        self._current = _item_for(self._headers, self._spool(self._max_part))
        self.items.append(self._current)

    def add_whole(self, headers: dict[str, str], data: memoryview) -> None:
        """One complete part of a body held in memory (the fast path)."""
        self._begin()
        self._headers = headers
        self._headers_done()
        self._data(data, 0, len(data))  # type: ignore[arg-type]

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._current is not None
        try:
            self._current.upload.write(data[start:end])
        except MedcloudError as exc:  # one oversized part fails alone; its bytes are dropped
            self._current.error = exc
            self._current.upload.discard()

    def discard_all(self) -> None:
        for item in self.items:
            item.upload.discard()


@router.post(
    "/api/v1/ingest/batch",
    summary="Upload many de-identified files in one multipart/related request (group commit)",
)
async def ingest_batch(request: Request, principal: Principal = Depends(require(Permission.INGEST))) -> JSONResponse:
    from python_multipart.multipart import MultipartParser, parse_options_header

    started = time.perf_counter()
    state = hub_state(request)
    request.state.audit_action = "ingest.batch"
    site, project = _upload_scope(request, principal)
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype not in (b"multipart/related", b"multipart/mixed", b"multipart/form-data") or b"boundary" not in params:
        raise UnsupportedFormat("send multipart/related (or multipart/mixed) with a boundary, one file per part")
    limit = state.settings.max_batch_bytes
    declared = _content_length(request)
    if declared is not None and declared > limit:
        raise TooLarge(f"batch of {declared} bytes exceeds the limit of {limit} bytes")
    budget = MemoryBudget(state.settings.batch_memory_bytes)
    collector = _PartCollector(
        partial(state.blobs.spool, budget=budget), state.settings.max_upload_bytes, state.settings.max_batch_files
    )
    boundary = params[b"boundary"]
    in_memory = declared is not None and declared <= state.settings.batch_memory_bytes
    parser = None if in_memory else MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    received = 0
    chunks: list[bytes] = []
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise TooLarge(f"batch exceeds the limit of {limit} bytes")
            if parser is None:
                chunks.append(chunk)
            else:
                parser.write(chunk)
        if parser is None:
            if received != declared:
                raise InvalidInput(f"truncated batch: Content-Length {declared}, received {received} bytes")
            for headers, data in split_multipart(b"".join(chunks), boundary):
                collector.add_whole(headers, data)
        else:
            parser.finalize()
    except MedcloudError:
        collector.discard_all()
        raise
    except Exception as exc:
        collector.discard_all()
        raise InvalidInput(f"malformed multipart body: {exc}") from None
    if not collector.items:
        raise InvalidInput("the batch holds no files")
    pending = [i for i in collector.items if i.error is None]
    t_received = time.perf_counter()
    phases: dict[str, float] = {}
    await run_in_threadpool(
        partial(state.ingestor.ingest_many, timings=phases),
        pending,
        site=site,
        project=project,
        subject=principal.subject,
        client=client_address(request),
    )
    out: list[dict[str, Any]] = []
    counts = {"stored": 0, "duplicate": 0, "failed": 0}
    for index, item in enumerate(collector.items):
        if item.result is not None:
            counts[item.result.status] += 1
            out.append({"index": index, **item.result.as_dict()})
        else:
            assert item.error is not None
            counts["failed"] += 1
            err = item.error
            out.append(
                {
                    "index": index,
                    "status": "failed",
                    "filename": item.filename,
                    "problem": {"type": PROBLEM_BASE + err.type_slug, "title": err.title, "status": err.status,
                                "detail": err.detail},
                }
            )  # fmt: skip
    t_stored = time.perf_counter()
    # Server-Timing (W3C): where this request's time went, for operators and benchmarks.
    timing = ", ".join(
        [f"receive;dur={(t_received - started) * 1000:.1f}", f"store;dur={(t_stored - t_received) * 1000:.1f}"]
        + [f"{name};dur={sec * 1000:.1f}" for name, sec in phases.items()]
    )
    return JSONResponse({"items": out, **counts}, status_code=200, headers={"Server-Timing": timing})
