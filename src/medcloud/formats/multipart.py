"""Multipart bodies (RFC 2046, RFC 2387 multipart/related): split a received one, write one out.

Shared by the hub's batch upload and DICOMweb (STOW-RS requests, WADO-RS answers)."""

from __future__ import annotations

import mmap
import secrets
from collections.abc import Iterable, Iterator

from medcloud.errors import InvalidInput

__all__ = [
    "MAX_BOUNDARY_BYTES",
    "MAX_PART_HEADER_BYTES",
    "MAX_PART_HEADER_LINES",
    "closing",
    "new_boundary",
    "part_header",
    "split_multipart",
]

# One part's header block: at most this many bytes (held whole) or bytes per line (streamed), and lines.
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_PART_HEADER_LINES = 16
# RFC 2046 section 5.1.1: a boundary is 1 to 70 characters.
MAX_BOUNDARY_BYTES = 70


def new_boundary() -> str:
    """A boundary no DICOM file will contain by chance (128 random bits)."""
    return f"medcloud-{secrets.token_hex(16)}"


def part_header(boundary: str, content_type: str, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """The delimiter and headers that open one part (the first part needs no leading CRLF, but it is harmless)."""
    lines = [f"\r\n--{boundary}", f"Content-Type: {content_type}", *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    """The close delimiter that ends a body."""
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


def split_multipart(body: bytes | mmap.mmap, boundary: bytes) -> Iterator[tuple[dict[str, str], memoryview]]:
    """Split a complete multipart body into (headers, data) per part, without copying data.

    Raises InvalidInput for a malformed body, including one without its closing boundary. The parts are
    views into `body`: release them before a mapped body is closed.
    """
    delim = b"--" + boundary
    view = memoryview(body)
    pos = body.find(delim, 0)  # an mmap would search from its current position otherwise
    if pos < 0:
        raise InvalidInput("malformed multipart body: the boundary never appears")
    if pos > 0 and body[pos - 2 : pos] != b"\r\n":
        raise InvalidInput("malformed multipart body: the boundary never opens a line")
    pos += len(delim)
    while True:
        if body[pos : pos + 2] == b"--":
            return  # close delimiter; an epilogue is ignored
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise InvalidInput("malformed multipart body: text after a boundary")
        pos = eol + 2
        headers: dict[str, str] = {}
        if body[pos : pos + 2] == b"\r\n":
            start = pos + 2
        else:
            hend = body.find(b"\r\n\r\n", pos, pos + MAX_PART_HEADER_BYTES)
            if hend < 0:
                raise InvalidInput(
                    f"malformed multipart body: part headers do not end (or exceed {MAX_PART_HEADER_BYTES} bytes)"
                )
            lines = body[pos:hend].split(b"\r\n")
            if len(lines) > MAX_PART_HEADER_LINES:
                raise InvalidInput(f"malformed multipart body: a part has over {MAX_PART_HEADER_LINES} headers")
            for line in lines:
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
