"""Validate non-DICOM image files (JPEG, PNG, TIFF incl. whole-slide images) and read their size."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

from medcloud.errors import InvalidInput
from medcloud.formats.records import ImageRecord
from medcloud.ingest.sniff import MEDIA_TYPES, Kind


def _open(source: bytes | Path) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _tail(source: bytes | Path, n: int) -> bytes:
    if isinstance(source, bytes):
        return source[-n:]
    with open(source, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - n))
        return fh.read()


def _png_size(head: bytes) -> tuple[int, int]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise InvalidInput("malformed PNG: no IHDR chunk")
    w, h = struct.unpack(">II", head[16:24])
    return int(w), int(h)


def read_image(source: bytes | Path, kind: Kind, filename: str) -> ImageRecord:
    """Check the file is complete and readable; raise InvalidInput otherwise."""
    width: int | None
    height: int | None
    if kind == "jpeg":
        if b"\xff\xd9" not in _tail(source, 64):
            raise InvalidInput("truncated JPEG: no end-of-image marker")
        from PIL import Image

        try:
            with _open(source) as fh, Image.open(fh) as im:
                width, height = im.size
        except Exception as exc:
            raise InvalidInput(f"malformed JPEG: {exc}") from None
    elif kind == "png":
        if _tail(source, 12)[-8:-4] != b"IEND":
            raise InvalidInput("truncated PNG: no IEND chunk")
        with _open(source) as fh:
            width, height = _png_size(fh.read(24))
    elif kind == "tiff":
        import tifffile

        try:
            with _open(source) as fh, tifffile.TiffFile(fh) as tf:
                page = tf.pages.first
                shape = page.shape
                height, width = int(shape[0]), int(shape[1])
                end = max(
                    (int(o) + int(c) for p in tf.pages for o, c in zip(p.dataoffsets, p.databytecounts, strict=False)),  # type: ignore[union-attr]
                    default=0,
                )
                fh.seek(0, 2)
                if end > fh.tell():
                    raise InvalidInput("truncated TIFF: image data extends past the end of the file")
        except InvalidInput:
            raise
        except Exception as exc:
            raise InvalidInput(f"malformed TIFF: {exc}") from None
    else:
        raise InvalidInput(f"unsupported image kind {kind}")
    return ImageRecord(media_type=MEDIA_TYPES[kind], filename=Path(filename).name[:255], width=width, height=height)
