"""multipart/related for WADO-RS answers and STOW-RS requests: the parts as objects over `formats.multipart`."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass

from medcloud.formats.multipart import closing, new_boundary, part_header, split_multipart

__all__ = ["Part", "closing", "new_boundary", "part_header", "split_parts"]


@dataclass
class Part:
    """One part of a received multipart body: its headers (lower-case names) and bytes."""

    headers: dict[str, str]
    data: memoryview


def split_parts(body: bytes | mmap.mmap, boundary: bytes) -> Iterator[Part]:
    """Split a complete multipart body (in memory or mapped) into parts; InvalidInput if malformed or truncated.

    Parts are views into `body`: release them before a mapped body is closed.
    """
    for headers, data in split_multipart(body, boundary):
        yield Part(headers, data)
