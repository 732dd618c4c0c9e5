"""Multipart request bodies (RFC 2046) split into files, for the batch upload route.

A body whose declared length fits the request's memory budget is received whole and split with one
scan (`bytes.find` in C rather than a Python callback per chunk); a larger or chunked one is parsed as
it streams by python-multipart. Either way each part is handed to a `PartSink` as it is found, and a
body that does not end with its closing boundary is refused: a cut batch is never taken for a whole one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Mapping
from typing import Protocol

from medcloud.errors import InvalidInput, MedcloudError, TooLarge, UnsupportedFormat
from medcloud.formats.multipart import (
    MAX_BOUNDARY_BYTES,
    MAX_PART_HEADER_BYTES,
    MAX_PART_HEADER_LINES,
    split_multipart,
)

# Media types a batch may be sent as; multipart/form-data is accepted for browsers and curl -F.
BATCH_MEDIA_TYPES = (b"multipart/related", b"multipart/mixed", b"multipart/form-data")

_FILENAME = re.compile(r'filename="([^"]*)"')


class PartSink(Protocol):
    """Where the parts of a body go: `begin` opens a part, `write` adds bytes to the open one."""

    def begin(self, filename: str, expected_sha256: str | None) -> None: ...

    def write(self, chunk: bytes | memoryview) -> None: ...


def boundary_of(content_type: str) -> bytes:
    """The boundary of a multipart batch's Content-Type, or 415 for anything else."""
    from python_multipart.multipart import parse_options_header

    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if ctype not in BATCH_MEDIA_TYPES or not boundary:
        raise UnsupportedFormat("send multipart/related (or multipart/mixed) with a boundary, one file per part")
    if len(boundary) > MAX_BOUNDARY_BYTES:
        raise InvalidInput(f"malformed multipart body: the boundary is over {MAX_BOUNDARY_BYTES} characters")
    return boundary


def _begin(sink: PartSink, headers: Mapping[str, str]) -> None:
    """Open a part in `sink` from its headers (lower-case names)."""
    name = headers.get("x-medcloud-filename", "")
    if not name:
        m = _FILENAME.search(headers.get("content-disposition", ""))
        name = m.group(1) if m else ""
    sink.begin(name, headers.get("x-content-sha256"))


class _StreamingParts:
    """python-multipart's streaming parser, its callbacks assembled into whole part headers for a sink."""

    def __init__(self, boundary: bytes, sink: PartSink) -> None:
        from python_multipart.multipart import MultipartParser

        self._sink = sink
        self._field = b""
        self._value = b""
        self._headers: dict[str, str] = {}
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }
        self._parser = MultipartParser(
            boundary,
            callbacks,  # type: ignore[arg-type]
            max_header_count=MAX_PART_HEADER_LINES,
            max_header_size=MAX_PART_HEADER_BYTES,
        )

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1").strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _begin(self._sink, self._headers)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._sink.write(data[start:end])

    def write(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finish(self) -> None:
        """Refuse a body that stopped before its closing boundary (python-multipart does not check)."""
        from python_multipart.multipart import MultipartState

        if self._parser.state != MultipartState.END:
            raise InvalidInput("malformed multipart body: the body ends before its closing boundary (truncated?)")


async def read_parts(
    chunks: AsyncIterable[bytes],
    boundary: bytes,
    sink: PartSink,
    *,
    limit: int,
    declared: int | None,
    whole_below: int,
) -> None:
    """Feed every part of a streamed multipart body to `sink`.

    `limit` caps the body (413 beyond it); a body whose `declared` length is at most `whole_below` is
    received whole and split at once, any other one is parsed as it arrives.
    """
    stream = None if declared is not None and declared <= whole_below else _StreamingParts(boundary, sink)
    received = 0
    held: list[bytes] = []
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise TooLarge(f"batch exceeds the limit of {limit} bytes")
            if stream is None:
                held.append(chunk)
            else:
                stream.write(chunk)
        if stream is not None:
            stream.finish()
            return
        if received != declared:
            raise InvalidInput(f"truncated batch: Content-Length {declared}, received {received} bytes")
        for headers, data in split_multipart(b"".join(held), boundary):
            _begin(sink, headers)
            sink.write(data)
    except MedcloudError:
        raise
    except Exception as exc:  # python-multipart's parse errors, and anything it lets through
        raise InvalidInput(f"malformed multipart body: {exc}") from None
