"""Hostile DICOM files built byte by byte (a module of its own: conftest names collide)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def _el(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) & 1:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    if vr in (b"OB", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2s2xI", group, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def part10(dataset: bytes, transfer_syntax: str = "1.2.840.10008.1.2.1", sop: str = "2.25.1") -> bytes:
    """A Part 10 file around an already encoded data set."""
    meta = (
        _el(2, 1, b"OB", b"\x00\x01")
        + _el(2, 2, b"UI", b"1.2.840.10008.5.1.4.1.1.7")
        + _el(2, 3, b"UI", sop.encode())
        + _el(2, 0x10, b"UI", transfer_syntax.encode())
    )
    return b"\x00" * 128 + b"DICM" + _el(2, 0, b"UL", struct.pack("<I", len(meta))) + meta + dataset


def identity(sop: str = "2.25.1") -> bytes:
    """The identifying UIDs and PatientIdentityRemoved=YES, explicit VR little endian."""
    return (
        _el(8, 0x16, b"UI", b"1.2.840.10008.5.1.4.1.1.7")
        + _el(8, 0x18, b"UI", sop.encode())
        + _el(0x12, 0x62, b"CS", b"YES")
        + _el(0x20, 0x0D, b"UI", b"2.25.2")
        + _el(0x20, 0x0E, b"UI", b"2.25.3")
    )


def nested_sequences(levels: int, *, undefined: bool) -> bytes:
    """A file whose (0040,A730) ContentSequence nests `levels` deep, every level one item."""
    inner = _el(0x0040, 0xA160, b"UT", b"leaf")
    for _ in range(levels):
        if undefined:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            inner = (
                struct.pack("<HH2s2xI", 0x0040, 0xA730, b"SQ", 0xFFFFFFFF)
                + item
                + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
            )
        else:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
            inner = struct.pack("<HH2s2xI", 0x0040, 0xA730, b"SQ", len(item)) + item
    return part10(identity() + inner)


def deflate_bomb(inflated: int) -> bytes:
    """A deflated-transfer-syntax file whose data set inflates to about `inflated` bytes."""
    body = identity()
    pad = inflated - len(body) - 12
    dataset = body + struct.pack("<HH2s2xI", 0xFFFC, 0xFFFC, b"OB", pad)
    squeezer = zlib.compressobj(1, zlib.DEFLATED, -15)
    chunks = [squeezer.compress(dataset)]
    zeros = b"\x00" * (1 << 20)
    left = pad
    while left > 0:
        chunks.append(squeezer.compress(zeros[: min(left, len(zeros))]))
        left -= len(zeros)
    chunks.append(squeezer.flush())
    return part10(b"".join(chunks), transfer_syntax="1.2.840.10008.1.2.1.99")


def deidentified_ct() -> bytes:
    """CT_small made to look like gateway output (test data)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientIdentityRemoved = "YES"
    ds.SOPInstanceUID = generate_uid(prefix="2.25.")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def sample(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path)).read_bytes()
