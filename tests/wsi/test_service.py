"""The slide service on its own: the LRU of open slides, level choice, thread safety, audit throttle."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcloud.errors import InvalidInput, NotFound
from medcloud.wsi.readers import Blob
from medcloud.wsi.service import SlideId, SlideService, SlideSource, parse_slide_id


class Blobs:
    """Blob bytes by name, counting how often each is opened."""

    def __init__(self, files: dict[str, bytes | Path]) -> None:
        self.files = files
        self.opened: list[str] = []

    def __call__(self, sha: str) -> Blob:
        self.opened.append(sha)
        if sha not in self.files:
            raise NotFound(sha)
        f = self.files[sha]
        return f if isinstance(f, Path) else io.BytesIO(f)


@pytest.fixture
def blobs(svs_bytes: bytes, wsi_files: list[Path]) -> Blobs:
    files: dict[str, bytes | Path] = {"svs": svs_bytes}
    # Two instances as bytes (as packed blobs are), the rest as paths (as large blobs are).
    for i, p in enumerate(wsi_files):
        files[f"dcm{i}"] = p.read_bytes() if i < 2 else p
    return Blobs(files)


def _svs(n: int = 1) -> SlideSource:
    return SlideSource(SlideId("svs", str(n)), "lung", None, ("svs",))


def _dcm(n: int) -> SlideSource:
    return SlideSource(SlideId("dicom-wsi", "1.2.3"), "lung", "1.2", tuple(f"dcm{i}" for i in range(n)))


def test_slide_ids() -> None:
    assert parse_slide_id("svs-12") == SlideId("svs", "12")
    assert parse_slide_id("dcm-1.2.840.1") == SlideId("dicom-wsi", "1.2.840.1")
    assert str(SlideId("dicom-wsi", "1.2")) == "dcm-1.2"
    for bad in ("svs-0", "svs-", "svs-1a", "dcm-", "dcm-1..2", "dcm-.1", "x-1", "", "dcm-" + "1" * 80):
        with pytest.raises(InvalidInput):
            parse_slide_id(bad)


def test_open_slides_are_cached_and_evicted(blobs: Blobs, tmp_path: Path) -> None:
    service = SlideService(blobs, scratch=tmp_path / "scratch", capacity=2)
    first = service.open(_svs(1))
    assert service.open(_svs(1)) is first and blobs.opened == ["svs"]
    dcm = service.open(_dcm(len(blobs.files) - 1))
    assert len(dcm.reader.levels) == 5
    assert len(list((tmp_path / "scratch").glob("wsi-*/*.dcm"))) == 2  # packed instances copied out
    service.open(_svs(2))  # evicts svs-1 (least recently used)
    assert service.cached() == 2
    service.open(_svs(1))
    assert blobs.opened.count("svs") == 3
    service.clear()
    assert service.cached() == 0 and not list((tmp_path / "scratch").glob("wsi-*"))


def test_zoomed_out_tiles_never_read_full_resolution(blobs: Blobs, tmp_path: Path) -> None:
    service = SlideService(blobs, scratch=tmp_path)
    source = _dcm(len(blobs.files) - 1)
    slide = service.open(source)
    levels: list[int] = []
    read = slide.read

    def spy(level: int, x: int, y: int, w: int, h: int) -> Image.Image:
        levels.append(level)
        return read(level, x, y, w, h)

    slide.read = spy  # type: ignore[method-assign]
    for dz_level, want in ((12, 0), (11, 1), (10, 2), (9, 3), (8, 4), (0, 4)):
        service.dz_tile(source, dz_level, 0, 0)
        assert levels[-1] == want, dz_level


def test_concurrent_tiles_from_one_slide(blobs: Blobs, tmp_path: Path) -> None:
    service = SlideService(blobs, scratch=tmp_path)
    source = _svs()
    one = [service.dz_tile(source, 12, c, r, "png") for c in range(5) for r in range(6)]
    with ThreadPoolExecutor(8) as pool:
        many = list(pool.map(lambda cr: service.dz_tile(source, 12, cr[0], cr[1], "png"),
                             [(c, r) for c in range(5) for r in range(6)]))  # fmt: skip
    assert many == one and blobs.opened == ["svs"]
    tile = np.asarray(Image.open(io.BytesIO(one[0])))
    assert tile.shape == (512, 512, 3) and tile.std() > 5  # tissue, not a blank


def test_unreadable_or_missing_slides(tmp_path: Path) -> None:
    service = SlideService(Blobs({"junk": b"not a tiff at all", "dcm0": b"DICM"}), scratch=tmp_path)
    with pytest.raises(InvalidInput):
        service.open(_svs().__class__(SlideId("svs", "9"), "lung", None, ("junk",)))
    with pytest.raises(InvalidInput):
        service.open(_dcm(1))
    with pytest.raises(NotFound):
        service.open(SlideSource(SlideId("svs", "8"), "lung", None, ("gone",)))
    assert not list(tmp_path.glob("wsi-*"))  # a failed open leaves no scratch files


def test_audit_window() -> None:
    service = SlideService(Blobs({}), audit_window_s=300)
    assert service.first_read_in_window("alice", "svs-1", now=0.0)
    assert not service.first_read_in_window("alice", "svs-1", now=299.0)
    assert service.first_read_in_window("bob", "svs-1", now=10.0)
    assert service.first_read_in_window("alice", "svs-2", now=10.0)
    assert service.first_read_in_window("alice", "svs-1", now=301.0)


def test_a_damaged_tile_is_a_clear_4xx_not_a_crash(svs_bytes: bytes, tmp_path: Path) -> None:
    import tifffile

    data = bytearray(svs_bytes)
    with tifffile.TiffFile(io.BytesIO(svs_bytes)) as tf:
        page = tf.pages.first
        offset, count = page.dataoffsets[7], page.databytecounts[7]  # a tile of the first row
    data[offset : offset + count] = b"\x00" * count
    service = SlideService(Blobs({"svs": bytes(data)}), scratch=tmp_path)
    with pytest.raises(InvalidInput, match="cannot be decoded"):
        service.dz_tile(_svs(), 12, 3, 0)
    assert service.dz_tile(_svs(), 12, 0, 4)[:2] == b"\xff\xd8"  # the rest of the slide still serves
