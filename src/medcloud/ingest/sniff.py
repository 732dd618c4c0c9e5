"""Tell what a file is from its first bytes, never from its name."""

from __future__ import annotations

from typing import Literal

Kind = Literal["dicom", "jpeg", "png", "tiff", "unknown"]

MEDIA_TYPES: dict[str, str] = {
    "dicom": "application/dicom",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "tiff": "image/tiff",
}


def sniff(head: bytes) -> Kind:
    """Classify by magic numbers; `head` should hold at least the first 132 bytes."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return "unknown"
