"""multipart/related bodies (RFC 2387) for WADO-RS answers and STOW-RS requests."""

from __future__ import annotations

import mmap
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from medcloud.errors import InvalidInput

__all__ = ["Part", "closing", "new_boundary", "part_header", "split_parts"]

_MAX_PART_HEADERS = 16 * 1024


def new_boundary() -> str:
    """A boundary no DICOM file will contain by chance (128 random bits)."""
    return f"medcloud-{secrets.token_hex(16)}"


def part_header(boundary: str, content_type: str, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """The delimiter and headers that open one part (the first part needs no leading CRLF, but it is harmless)."""
    lines = [f"\r\n--{boundary}", f"Content-Type: {content_type}", *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


@dataclass
class Part:
    """One part of a received multipart body: its headers (lower-case names) and bytes."""

    headers: dict[str, str]
    data: memoryview


def split_parts(body: bytes | mmap.mmap, boundary: bytes) -> Iterator[Part]:
    """Split a complete multipart body (in memory or mapped) into parts; InvalidInput if malformed or truncated.

    Parts are views into `body`: release them before a mapped body is closed.
    """
    delim = b"--" + boundary
    view = memoryview(body)
    pos = body.find(delim)
    if pos < 0 or (pos > 0 and body[pos - 2 : pos] != b"\r\n"):
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
        yield Part(headers, view[start:end])
        pos = end + 2 + len(delim)
