"""Validate non-DICOM image files (JPEG, PNG, TIFF incl. whole-slide images) and read their size."""

from __future__ import annotations

import io
import math
import struct
import time
import zlib
from pathlib import Path
from typing import BinaryIO

from medcloud.errors import InvalidInput, TooLarge
from medcloud.formats.records import ImageRecord
from medcloud.formats.sniff import MEDIA_TYPES, Kind

# A TIFF's directories form a chain the client wrote: it is walked with loop detection and these
# bounds before tifffile iterates it (tifffile's own loop check does not fire while iterating).
MAX_TIFF_PAGES = 65_536
TIFF_WALK_SECONDS = 10.0
# Pillow's decompression-bomb threshold (2 x Image.MAX_IMAGE_PIXELS): a PNG declaring more is refused
# at ingest, since whoever decodes it later (thumbnails, inference) would allocate that much.
MAX_IMAGE_PIXELS = 178_956_970
MAX_PNG_CHUNKS = 1_000_000


def _open(source: bytes | Path) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _tail(source: bytes | Path, n: int) -> bytes:
    if isinstance(source, bytes):
        return source[-n:]
    with open(source, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - n))
        return fh.read()


def _png_size(fh: BinaryIO) -> tuple[int, int]:
    """Width and height of a PNG whose chunk chain is whole: IHDR first, IDAT data, IEND exactly at the
    end, every chunk's CRC right. A PNG is decoded later (thumbnails, inference), so one that declares
    more pixels than it could hold or than a decoder may allocate is refused here."""
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(8)
    head = fh.read(25)
    if len(head) < 25 or head[4:8] != b"IHDR":
        raise InvalidInput("malformed PNG: no IHDR chunk")
    w, h = struct.unpack(">II", head[8:16])
    if not w or not h:
        raise InvalidInput("malformed PNG: zero width or height")
    if w * h > MAX_IMAGE_PIXELS:
        raise TooLarge(f"PNG declares {w}x{h} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit")
    pos, idat, chunks = 8, 0, 0
    fh.seek(pos)
    while True:
        hdr = fh.read(8)
        if len(hdr) < 8:
            raise InvalidInput("truncated PNG: the chunk chain ends before IEND")
        length, ctype = struct.unpack(">I4s", hdr)
        if pos + 12 + length > size:
            raise InvalidInput(f"truncated PNG: chunk {ctype!r} runs past the end of the file")
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise InvalidInput(f"PNG has more than {MAX_PNG_CHUNKS} chunks; refused")
        crc = zlib.crc32(ctype)
        left = length
        while left:
            piece = fh.read(min(left, 1 << 20))
            crc = zlib.crc32(piece, crc)
            left -= len(piece)
        (want,) = struct.unpack(">I", fh.read(4))
        if crc != want:
            raise InvalidInput(f"malformed PNG: chunk {ctype!r} at offset {pos} fails its CRC")
        pos += 12 + length
        if ctype == b"IDAT":
            idat += length
        if ctype == b"IEND":
            break
    if pos != size:
        raise InvalidInput("malformed PNG: bytes after the IEND chunk")
    if not idat:
        raise InvalidInput("malformed PNG: no image data (IDAT)")
    return int(w), int(h)


def _tiff_directory_count(fh: BinaryIO) -> int:
    """Number of image file directories, refusing loops, pointers past the end and too many pages."""
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(0)
    head = fh.read(16)
    order = "<" if head[:2] == b"II" else ">"
    (version,) = struct.unpack(order + "H", head[2:4])
    if version == 43:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        offset_fmt, count_fmt, entry_size = order + "Q", order + "Q", 20
        (offset,) = struct.unpack(offset_fmt, head[8:16])
    else:
        offset_fmt, count_fmt, entry_size = order + "I", order + "H", 12
        (offset,) = struct.unpack(offset_fmt, head[4:8])
    count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
    seen: set[int] = set()
    deadline = time.monotonic() + TIFF_WALK_SECONDS
    while offset:
        if offset in seen:
            raise InvalidInput(f"malformed TIFF: directory chain loops back to offset {offset}")
        if len(seen) >= MAX_TIFF_PAGES:
            raise InvalidInput(f"TIFF has more than {MAX_TIFF_PAGES} pages; refused")
        if time.monotonic() > deadline:
            raise InvalidInput("TIFF directory chain takes too long to walk; refused")
        if offset + count_size > size:
            raise InvalidInput(f"truncated TIFF: directory at offset {offset} lies past the end of the file")
        seen.add(offset)
        fh.seek(offset)
        (entries,) = struct.unpack(count_fmt, fh.read(count_size))
        fh.seek(offset + count_size + entries * entry_size)
        raw = fh.read(offset_size)
        if len(raw) < offset_size:
            raise InvalidInput(f"truncated TIFF: directory at offset {offset} runs past the end of the file")
        (offset,) = struct.unpack(offset_fmt, raw)
    if not seen:
        raise InvalidInput("malformed TIFF: no image directory")
    return len(seen)


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
            width, height = _png_size(fh)
    elif kind == "tiff":
        import tifffile

        try:
            with _open(source) as fh:
                pages = _tiff_directory_count(fh)
                fh.seek(0)
                with tifffile.TiffFile(fh) as tf:
                    page = tf.pages.first
                    shape = page.shape
                    height, width = int(shape[0]), int(shape[1])
                    deadline = time.monotonic() + TIFF_WALK_SECONDS
                    end = 0
                    # By index, never by iterating `tf.pages`: the count above is known to be finite.
                    for i in range(pages):
                        if time.monotonic() > deadline:
                            raise InvalidInput("TIFF pages take too long to read; refused")
                        p = tf.pages[i]
                        offsets, counts = p.dataoffsets, p.databytecounts
                        # tifffile drops offset tags that point past a cut with only a log warning: a page
                        # whose strips or tiles are not all listed is refused, not read as having no data.
                        if not offsets or len(offsets) != len(counts) or len(offsets) != math.prod(p.chunked):
                            raise InvalidInput(
                                f"malformed or truncated TIFF: page {i} does not list all its image data"
                            )
                        for o, c in zip(offsets, counts, strict=True):
                            end = max(end, int(o) + int(c))
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
