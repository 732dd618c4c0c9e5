"""What a result says, before it is DICOM: boxes in pixels, masks as PNG or RLE, the algorithm that made them.

Plain dataclasses and their checks against the source images' sizes; a result that does not fit its
source (a box outside the image, a mask of another size) is refused with InvalidInput (400).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medcloud.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LOCAL_SCHEME", "Box", "FindingCode", "MaskInput", "ResultSpec", "decode_mask", "finding_code"]

# A private coding scheme (PS3.3 8.1: designators starting "99") for labels sent without a standard code.
LOCAL_SCHEME = "99MEDCLOUD"
_CODE_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SCHEME = re.compile(r"^[A-Z0-9_.-]{1,16}$")


@dataclass(frozen=True)
class FindingCode:
    """A coded finding: e.g. SCT 27925004 "Nodule", or LOCAL_SCHEME's label itself."""

    value: str
    scheme: str
    meaning: str


def finding_code(label: str, code: dict[str, Any] | FindingCode | None = None) -> FindingCode:
    """The coded concept of a label: the one given (checked), else the label in LOCAL_SCHEME."""
    if isinstance(code, FindingCode):
        found = code
    elif code:
        try:
            found = FindingCode(str(code["value"]), str(code["scheme"]), str(code.get("meaning") or label))
        except KeyError as exc:
            raise InvalidInput(f"a finding code needs 'value' and 'scheme' (missing {exc})") from None
    else:
        found = FindingCode(re.sub(r"[^A-Za-z0-9_.:-]", "_", label)[:64], LOCAL_SCHEME, label)
    if not _CODE_VALUE.match(found.value) or not _SCHEME.match(found.scheme) or not 0 < len(found.meaning) <= 64:
        raise InvalidInput(f"finding code {found.value!r} ({found.scheme}) is not a valid DICOM code")
    return found


@dataclass(frozen=True)
class Box:
    """A detection: top-left (x, y), width and height in pixels of `sop_uid` (and `frame`, 1-based)."""

    x: float
    y: float
    w: float
    h: float
    label: str
    score: float | None = None
    code: FindingCode | None = None
    sop_uid: str | None = None
    frame: int | None = None

    def check(self, columns: int, rows: int, frames: int) -> None:
        """InvalidInput unless the box lies inside a `columns` x `rows` image of `frames` frames."""
        if not self.label or len(self.label) > 64:
            raise InvalidInput("a box needs a label of 1-64 characters")
        if self.w <= 0 or self.h <= 0:
            raise InvalidInput(f"box {self.label!r}: width and height must be positive")
        if self.x < 0 or self.y < 0 or self.x + self.w > columns or self.y + self.h > rows:
            raise InvalidInput(
                f"box {self.label!r} ({self.x:g},{self.y:g} {self.w:g}x{self.h:g}) lies outside the "
                f"{columns}x{rows} image"
            )
        if self.score is not None and not 0.0 <= self.score <= 1.0:
            raise InvalidInput(f"box {self.label!r}: score must be in [0, 1]")
        if self.frame is not None and not 1 <= self.frame <= frames:
            raise InvalidInput(f"box {self.label!r}: frame {self.frame} is not in 1..{frames}")


@dataclass(frozen=True)
class MaskInput:
    """One source image's mask: a PNG (base64) or a COCO-style uncompressed RLE {"size": [h, w], "counts": [...]}."""

    sop_uid: str | None = None
    png_base64: str | None = None
    rle: dict[str, Any] | None = None


@dataclass(frozen=True)
class ResultSpec:
    """Who made a result and how it is described."""

    algorithm: str
    version: str
    series_description: str = ""
    label: str = ""  # the segment's label (masks)
    code: FindingCode | None = None
    fractional: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def _png(data: str) -> np.ndarray:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("mask 'png' is not base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format != "PNG":
                raise InvalidInput("mask 'png' holds no PNG image")
            if im.width * im.height > 64 * 1024 * 1024:
                raise InvalidInput("mask is too large")
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I;16", "I") else im)
    except (UnidentifiedImageError, OSError):
        raise InvalidInput("mask 'png' holds no PNG image") from None
    return arr


def _rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO's uncompressed RLE: run lengths alternating 0/1 from 0, over the mask in column-major order."""
    import numpy as np

    try:
        h, w = (int(v) for v in rle["size"])
        counts = [int(c) for c in rle["counts"]]
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("mask 'rle' needs 'size': [height, width] and 'counts': [run lengths]") from None
    if h <= 0 or w <= 0 or h * w > 64 * 1024 * 1024 or any(c < 0 for c in counts) or sum(counts) != h * w:
        raise InvalidInput(f"mask 'rle' runs do not cover a {h}x{w} mask")
    values = np.zeros(len(counts), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def decode_mask(mask: MaskInput, *, rows: int, columns: int, fractional: bool) -> np.ndarray:
    """The mask as (rows, columns): binary -> bool (non-zero is inside), fractional -> float in [0, 1]."""
    import numpy as np

    if (mask.png_base64 is None) == (mask.rle is None):
        raise InvalidInput("a mask needs exactly one of 'png' (base64) or 'rle'")
    arr = _png(mask.png_base64) if mask.png_base64 is not None else _rle(mask.rle or {})
    if arr.ndim != 2 or arr.shape != (rows, columns):
        raise InvalidInput(f"mask is {arr.shape[1]}x{arr.shape[0]}, the source image is {columns}x{rows}")
    if not fractional:
        return np.asarray(arr > 0)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    top = 255.0 if arr.max(initial=0) <= 255 else 65535.0
    return (arr.astype(np.float32) / top).clip(0.0, 1.0)
