"""Open slides kept in a bounded, thread-safe LRU; DeepZoom tiles, native tiles and thumbnails.

    service = SlideService(scratch=data_dir / "cache" / "wsi")
    slide = service.open(source)                  # SlideSource: kind, id and where its bytes are
    jpeg = service.dz_tile(source, 12, 3, 4, "jpeg")
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from medcloud.errors import InvalidInput, NotFound, TooLarge
from medcloud.wsi.geometry import dz_level_count, dz_tile
from medcloud.wsi.readers import Blob, DicomWsiReader, SlideReader, SvsReader

__all__ = ["TILE_SIZE", "OpenSlide", "SlideId", "SlideService", "SlideSource", "parse_slide_id"]

TILE_SIZE = 512
JPEG_QUALITY = 85
MAX_THUMBNAIL = 2048
# One tile never reads more native pixels than this (a slide without coarse levels, zoomed far out).
MAX_READ_PIXELS = 8192 * 8192
Kind = Literal["svs", "dicom-wsi"]
Format = Literal["jpeg", "png"]
_PREFIX: dict[str, Kind] = {"svs": "svs", "dcm": "dicom-wsi"}
_SLIDE_ID = re.compile(r"^(svs)-([1-9][0-9]{0,17})$|^(dcm)-([0-9]+(?:\.[0-9]+)*)$")


@dataclass(frozen=True)
class SlideId:
    kind: Kind
    key: str  # the image id (SVS) or the Series Instance UID (DICOM WSI)

    def __str__(self) -> str:
        return f"{'svs' if self.kind == 'svs' else 'dcm'}-{self.key}"


def parse_slide_id(text: str) -> SlideId:
    """`svs-<image id>` or `dcm-<series UID>`; InvalidInput for anything else."""
    m = _SLIDE_ID.match(text)
    if m is None or len(text) > 70:
        raise InvalidInput("a slide id is svs-<image id> or dcm-<Series Instance UID>")
    prefix, key = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return SlideId(_PREFIX[prefix], key)


@dataclass(frozen=True)
class SlideSource:
    """What the catalog says about a slide: who may see it, and which blobs hold it."""

    slide_id: SlideId
    project: str
    study_uid: str | None
    blobs: tuple[str, ...]  # SHA-256 of the SVS file, or of each DICOM instance
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class OpenSlide:
    """A reader and the lock that serializes its calls."""

    def __init__(self, reader: SlideReader) -> None:
        self.reader = reader
        self.lock = threading.Lock()

    def read(self, level: int, x: int, y: int, width: int, height: int) -> Image.Image:
        with self.lock:
            return self.reader.read(level, x, y, width, height)


def encode(image: Image.Image, fmt: Format) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, "PNG", compress_level=1)
    else:
        image.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class SlideService:
    """Open slides (LRU of `capacity`), tiles and thumbnails; every method may run on any thread."""

    def __init__(
        self,
        open_blob: Callable[[str], Blob],
        *,
        scratch: Path | None = None,
        capacity: int = 16,
        audit_window_s: float = 300.0,
    ) -> None:
        self._open_blob = open_blob
        self._scratch = scratch
        self._capacity = capacity
        self._slides: OrderedDict[tuple[str, tuple[str, ...]], OpenSlide] = OrderedDict()
        self._lock = threading.Lock()
        self._opening: dict[tuple[str, tuple[str, ...]], threading.Lock] = {}
        self._audit_window = audit_window_s
        self._audited: OrderedDict[tuple[str, str], float] = OrderedDict()

    # ---- open slides ----------------------------------------------------------------------
    def open(self, source: SlideSource) -> OpenSlide:
        """The open slide for `source`, from the cache or opened now (once, however many callers wait)."""
        key = (str(source.slide_id), source.blobs)
        with self._lock:
            hit = self._slides.get(key)
            if hit is not None:
                self._slides.move_to_end(key)
                return hit
            gate = self._opening.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                hit = self._slides.get(key)
                if hit is not None:
                    return hit
            try:
                slide = OpenSlide(self._read(source))
            finally:
                with self._lock:
                    self._opening.pop(key, None)
            evicted: list[OpenSlide] = []
            with self._lock:
                self._slides[key] = slide
                while len(self._slides) > self._capacity:
                    evicted.append(self._slides.popitem(last=False)[1])
        for old in evicted:
            with old.lock:  # a read in progress finishes first
                old.reader.close()
        return slide

    def _read(self, source: SlideSource) -> SlideReader:
        if not source.blobs:
            raise NotFound(f"slide {source.slide_id} has no stored files")
        if source.slide_id.kind == "svs":
            return SvsReader(self._open_blob(source.blobs[0]))
        return DicomWsiReader([self._open_blob(sha) for sha in source.blobs], self._scratch)

    def clear(self) -> None:
        """Close every open slide (the next request opens it again: a cold read)."""
        with self._lock:
            slides = list(self._slides.values())
            self._slides.clear()
        for slide in slides:
            with slide.lock:
                slide.reader.close()

    def cached(self) -> int:
        with self._lock:
            return len(self._slides)

    # ---- what a viewer reads ----------------------------------------------------------------
    def info(self, source: SlideSource, base_url: str = "/api/v1/slides") -> dict[str, Any]:
        """The slide's description (the `GET /api/v1/slides/{id}` body)."""
        reader = self.open(source).reader
        top = reader.levels[0]
        sid = str(source.slide_id)
        return {
            "id": sid,
            "kind": source.slide_id.kind,
            "project": source.project,
            "study_uid": source.study_uid,
            "width": top.width,
            "height": top.height,
            "tile_size": TILE_SIZE,
            "overlap": 0,
            "format": "jpeg",
            "mpp": list(reader.mpp) if reader.mpp else None,
            "levels": [{"width": lv.width, "height": lv.height, "downsample": lv.downsample} for lv in reader.levels],
            "dz_levels": dz_level_count(top.width, top.height),
            "dzi_url": f"{base_url}/{sid}/dzi/",
            **source.extra,
        }

    def dz_tile(self, source: SlideSource, level: int, col: int, row: int, fmt: Format = "jpeg") -> bytes:
        """DeepZoom tile (`level`, `col`, `row`), read from the nearest native level; NotFound outside."""
        slide = self.open(source)
        levels = [(lv.width, lv.height, lv.downsample) for lv in slide.reader.levels]
        w, h, _ = levels[0]
        region = dz_tile(w, h, levels, level, col, row, TILE_SIZE)
        if region.width * region.height > MAX_READ_PIXELS:
            raise TooLarge(
                f"DeepZoom level {level} would read {region.width}x{region.height} pixels of a level this "
                "slide has no coarser copy of; zoom in further"
            )
        image = slide.read(region.level, region.x, region.y, region.width, region.height)
        if image.size != (region.out_width, region.out_height):
            image = image.resize((region.out_width, region.out_height), Image.Resampling.BOX)
        return encode(image, fmt)

    def native_tile(self, source: SlideSource, level: int, x: int, y: int, fmt: Format = "jpeg") -> bytes:
        """Tile (`x`, `y`) of native `level` (0 = full resolution), 512 x 512 but at the edges."""
        slide = self.open(source)
        levels = slide.reader.levels
        if not 0 <= level < len(levels):
            raise NotFound(f"level {level} does not exist (levels 0..{len(levels) - 1})")
        lv = levels[level]
        cols, rows = -(-lv.width // TILE_SIZE), -(-lv.height // TILE_SIZE)
        if not (0 <= x < cols and 0 <= y < rows):
            raise NotFound(f"tile {x},{y} is outside level {level} ({cols} x {rows} tiles)")
        x0, y0 = x * TILE_SIZE, y * TILE_SIZE
        w, h = min(TILE_SIZE, lv.width - x0), min(TILE_SIZE, lv.height - y0)
        return encode(slide.read(level, x0, y0, w, h), fmt)

    def thumbnail(self, source: SlideSource, max_size: int = 256) -> bytes:
        """A JPEG of the whole slide, no side larger than `max_size`."""
        if not 1 <= max_size <= MAX_THUMBNAIL:
            raise InvalidInput(f"max is 1..{MAX_THUMBNAIL}")
        slide = self.open(source)
        with slide.lock:
            image = slide.reader.thumbnail(max_size)
        if max(image.size) > max_size:  # the readers round; the contract is a bound
            image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
        return encode(image, "jpeg")

    # ---- audit throttle -------------------------------------------------------------------
    def first_read_in_window(self, subject: str, slide_id: str, now: float | None = None) -> bool:
        """True when `subject` has not read tiles of `slide_id` within the audit window (then it is noted)."""
        now = time.monotonic() if now is None else now
        key = (subject, slide_id)
        with self._lock:
            last = self._audited.get(key)
            if last is not None and now - last < self._audit_window:
                return False
            self._audited[key] = now
            self._audited.move_to_end(key)
            while len(self._audited) > 10_000:
                self._audited.popitem(last=False)
            return True

    def sources_levels(self, sources: Sequence[SlideSource]) -> list[dict[str, Any]]:
        """`info` of each source; a slide that cannot be read is listed with an `error` instead."""
        out: list[dict[str, Any]] = []
        for s in sources:
            try:
                out.append(self.info(s))
            except (InvalidInput, NotFound) as exc:
                out.append({"id": str(s.slide_id), "kind": s.slide_id.kind, "project": s.project,
                            "study_uid": s.study_uid, "error": str(exc), **s.extra})  # fmt: skip
        return out
