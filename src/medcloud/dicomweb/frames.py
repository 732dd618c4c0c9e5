"""Frames of stored instances (WADO-RS `.../frames/{list}`): native pixel data sliced per frame."""

from __future__ import annotations

from typing import BinaryIO

import pydicom

from medcloud.dicomweb.json import NATIVE_SYNTAXES
from medcloud.errors import InvalidInput, NotFound

__all__ = ["EXPLICIT_LE", "native_frames", "parse_frame_list"]

EXPLICIT_LE = "1.2.840.10008.1.2.1"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
MAX_FRAMES_PER_REQUEST = 10_000


def parse_frame_list(text: str) -> list[int]:
    """`1,3,5` to [1, 3, 5]; frame numbers start at 1 (InvalidInput otherwise)."""
    numbers: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise InvalidInput(f"frame numbers are integers from 1, comma separated; not {item[:20]!r}")
        numbers.append(int(item))
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    return numbers


def native_frames(fh: BinaryIO, transfer_syntax: str, numbers: list[int]) -> list[bytes]:
    """The requested frames of a native (uncompressed) file, little endian; NotFound past the last frame."""
    if transfer_syntax not in NATIVE_SYNTAXES:
        raise InvalidInput("frames of compressed pixel data are not served yet")  # callers check first
    ds = pydicom.dcmread(fh, force=True)
    if "PixelData" not in ds:
        raise NotFound("this instance has no pixel data")
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if bits % 8:
        raise InvalidInput(f"frames of {bits}-bit pixel data are not served yet")
    size = rows * columns * samples * bits // 8
    pixels: bytes = ds.PixelData
    out: list[bytes] = []
    for n in numbers:
        if n > count:
            raise NotFound(f"frame {n} does not exist (the instance has {count})")
        frame = pixels[(n - 1) * size : n * size]
        if len(frame) != size:
            raise NotFound(f"frame {n} is cut short in the stored file")
        if transfer_syntax == _BIG_ENDIAN and bits > 8:
            import numpy as np

            frame = np.frombuffer(frame, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
        out.append(frame)
    return out


def encapsulated_frames(fh: BinaryIO, numbers: list[int]) -> list[bytes]:
    """The requested frames of a compressed file, as stored (no transcoding); NotFound past the last."""
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(fh, force=True)
    if "PixelData" not in ds:
        raise NotFound("this instance has no pixel data")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    wanted = set(numbers)
    for n in numbers:
        if n > count:
            raise NotFound(f"frame {n} does not exist (the instance has {count})")
    found: dict[int, bytes] = {}
    for index, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=count), start=1):
        if index in wanted:
            found[index] = frame
        if index >= max(wanted):
            break
    return [found[n] for n in numbers]
