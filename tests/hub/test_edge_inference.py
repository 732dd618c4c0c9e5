"""Inference at the edge (issue 10, item 5d): a decompression bomb is a 413, not a 500."""

from __future__ import annotations

import struct
import zlib

from tests.hub.conftest import Hub


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels but carries almost no data (a decompression bomb's head)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_png_over_pillows_bomb_limit_is_413(hub: Hub) -> None:
    """5d: a PNG over 178 Mpx raised Pillow's DecompressionBombError, answered 500."""
    bomb = _png_header_only(20_000, 10_000)  # 200 Mpx, over 2 x Pillow's MAX_IMAGE_PIXELS
    r = hub.client.post(
        "/api/v1/inference", content=bomb, headers={**hub.auth("clinician"), "Content-Type": "image/png"}
    )
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json" and r.json()["type"].endswith("/too-large")
    events = hub.client.get("/api/v1/audit?action=inference.run", headers=hub.auth("auditor")).json()["items"]
    assert [e["outcome"] for e in events] == ["refused:413:too-large"]
    # Between our own limit and Pillow's, our check answers, as before.
    r = hub.client.post(
        "/api/v1/inference",
        content=_png_header_only(10_000, 5_000),
        headers={**hub.auth("clinician"), "Content-Type": "image/png"},
    )
    assert r.status_code == 413
