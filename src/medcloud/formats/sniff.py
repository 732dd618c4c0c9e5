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


def sniff(head: bytes, *, bare_dicom: bool = False) -> Kind:
    """Classify by magic numbers; `head` should hold at least the first 132 bytes.

    `bare_dicom` also accepts a data set without the Part 10 preamble (what some modalities and old
    archives write); the hub never does, the gateway's de-identifier does and writes Part 10 out.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    # Preamble-less DICOM: a group 0002 or 0008 element in explicit or implicit little endian.
    if (
        bare_dicom
        and len(head) >= 8
        and head[:2] in (b"\x02\x00", b"\x08\x00")
        and head[3] == 0
        and head[2] in (0, 5, 0x16)
    ):
        return "dicom"
    return "unknown"
