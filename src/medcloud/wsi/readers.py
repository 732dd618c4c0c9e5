"""One open slide behind one small interface: Aperio SVS through tiffslide, DICOM WSI through wsidicom.

Readers are not thread-safe on their own (one file handle each); `service.OpenSlide` serializes calls.
"""

from __future__ import annotations

import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from medcloud.errors import InvalidInput

__all__ = ["DicomWsiReader", "LevelInfo", "SlideReader", "SvsReader"]

# DICOM WSI instances are opened by path; blobs stored inside packs are copied to a scratch folder.
Blob = Path | BinaryIO


@dataclass(frozen=True)
class LevelInfo:
    width: int
    height: int
    downsample: float


class SlideReader(ABC):
    """A whole-slide image opened for reading: its native levels, pixel size and pixels."""

    levels: list[LevelInfo]
    mpp: tuple[float, float] | None  # micrometres per pixel at level 0 (x, y)

    @abstractmethod
    def read(self, level: int, x: int, y: int, width: int, height: int) -> Image.Image:
        """An RGB region of native `level`, in that level's pixel coordinates."""

    @abstractmethod
    def thumbnail(self, max_size: int) -> Image.Image:
        """The whole slide in RGB, no side larger than `max_size`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles and scratch files."""


def _rgb(region: Any) -> Image.Image:
    if isinstance(region, np.ndarray):
        if region.ndim == 3 and region.shape[2] == 4:
            region = region[..., :3]
        return Image.fromarray(np.ascontiguousarray(region)).convert("RGB")
    image: Image.Image = region
    return image if image.mode == "RGB" else image.convert("RGB")


class SvsReader(SlideReader):
    """An Aperio SVS (or other tiled TIFF tiffslide reads) from a path or an open binary stream."""

    def __init__(self, blob: Blob) -> None:
        import tiffslide

        try:
            self._slide = tiffslide.TiffSlide(blob)
        except Exception as exc:
            raise InvalidInput(f"not a readable whole-slide TIFF: {str(exc)[:200]}") from None
        w0, h0 = self._slide.dimensions
        self.levels = [
            LevelInfo(int(w), int(h), float(ds))
            for (w, h), ds in zip(self._slide.level_dimensions, self._slide.level_downsamples, strict=True)
        ]
        if (w0, h0) != (self.levels[0].width, self.levels[0].height):  # pragma: no cover - tiffslide invariant
            raise InvalidInput("slide level 0 disagrees with its dimensions")
        props = self._slide.properties
        mx, my = props.get("tiffslide.mpp-x"), props.get("tiffslide.mpp-y")
        self.mpp = (float(mx), float(my)) if mx and my else None

    def read(self, level: int, x: int, y: int, width: int, height: int) -> Image.Image:
        ds = self.levels[level].downsample
        # tiffslide takes the location in level-0 pixels and the size in pixels of `level`.
        loc = (round(x * ds), round(y * ds))
        return _rgb(self._slide.read_region(loc, level, (width, height), as_array=True))

    def thumbnail(self, max_size: int) -> Image.Image:
        return _rgb(self._slide.get_thumbnail((max_size, max_size)))

    def close(self) -> None:
        self._slide.close()


class DicomWsiReader(SlideReader):
    """The instances of one DICOM VL Whole Slide Microscopy series (one per pyramid level)."""

    def __init__(self, blobs: Sequence[Blob], scratch_root: Path | None = None) -> None:
        from wsidicom import WsiDicom

        self._scratch: Path | None = None
        paths: list[Path] = []
        for i, blob in enumerate(blobs):
            if isinstance(blob, Path):
                paths.append(blob)
                continue
            if self._scratch is None:
                if scratch_root is not None:
                    scratch_root.mkdir(parents=True, exist_ok=True)
                self._scratch = Path(tempfile.mkdtemp(prefix="wsi-", dir=scratch_root))
            path = self._scratch / f"{i}.dcm"
            with blob, open(path, "wb") as out:
                shutil.copyfileobj(blob, out)
            paths.append(path)
        try:
            self._wsi = WsiDicom.open(paths)
            pyramid = list(self._wsi.levels)
        except Exception as exc:
            self.close()
            raise InvalidInput(f"not a readable DICOM whole-slide series: {str(exc)[:200]}") from None
        if not pyramid:
            self.close()
            raise InvalidInput("the series holds no whole-slide pyramid level")
        pyramid.sort(key=lambda lv: lv.size.width, reverse=True)
        w0, h0 = pyramid[0].size.width, pyramid[0].size.height
        self._level_numbers = [int(lv.level) for lv in pyramid]
        self.levels = [
            LevelInfo(lv.size.width, lv.size.height, max(w0 / lv.size.width, h0 / lv.size.height)) for lv in pyramid
        ]
        mpp = self._wsi.mpp
        self.mpp = (float(mpp.width), float(mpp.height)) if mpp is not None else None

    def read(self, level: int, x: int, y: int, width: int, height: int) -> Image.Image:
        # wsidicom names a level by log2 of its downsample and takes the location in that level's pixels.
        return _rgb(self._wsi.read_region((x, y), self._level_numbers[level], (width, height)))

    def thumbnail(self, max_size: int) -> Image.Image:
        return _rgb(self._wsi.read_thumbnail((max_size, max_size)))

    def close(self) -> None:
        wsi = getattr(self, "_wsi", None)
        if wsi is not None:
            wsi.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
