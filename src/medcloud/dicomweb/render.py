"""Rendered images and thumbnails (PS3.18 8.3.5, 9.5, 10.4): a frame of a stored file to JPEG or PNG.

The pipeline follows PS3.3's grayscale chain: stored values, Modality LUT (rescale slope and intercept,
or a Modality LUT Sequence), VOI (the `window` query parameter, else the file's first window or VOI LUT,
else a robust default over the 0.5th-99.5th percentile that ignores padding), MONOCHROME1 inversion.
Colour images (RGB, YBR decoded to RGB, PALETTE COLOR through its lookup table) are scaled to 8 bits.
Then the `viewport` region is cut, flipped, scaled to fit, and encoded. Pixels are decoded with pydicom
(see `codecs` for the compressed syntaxes). Pure functions over bytes; the hub adds access and audit.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, BinaryIO

from medcloud.dicomweb.media import NotAcceptable
from medcloud.dicomweb.render_params import JPEG, PNG, WINDOW_FUNCTIONS, RenderSpec, Viewport, Window
from medcloud.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import numpy as np
    from pydicom import Dataset

MAX_PIXELS = 1 << 27  # a frame larger than this (e.g. 11,585 squared) is not decoded for rendering
WHOLE_FILE_BYTES = 64 << 20

__all__ = ["JPEG", "MAX_PIXELS", "PNG", "RenderCache", "RenderSpec", "display_values", "encode", "render_frame"]

# ---------------------------------------------------------------- pixels to 8-bit display values


def _first(value: Any) -> float:
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Modality values through a VOI window (PS3.3 C.11.2.1.2.1/2), to 0..255 as float."""
    import numpy as np

    c, w = window.center, window.width
    if window.function == "sigmoid":
        return 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function == "linear-exact":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0) * 255.0
    if w <= 1:  # the linear window of width 1 is a threshold
        return np.where(values > c - 0.5, 255.0, 0.0)
    return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0) * 255.0


def _file_window(ds: Dataset) -> Window | None:
    """The file's first VOI window, if it has a usable one."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds or ds.WindowCenter is None or ds.WindowWidth is None:
        return None
    try:
        c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None  # a damaged window: fall back on the image's own range
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").lower().replace("_", "-")
    if function in WINDOW_FUNCTIONS and math.isfinite(c) and w >= (1 if function == "linear" else 1e-9):
        return Window(c, w, function)
    return None


def _range_window(lo: float, hi: float) -> Window:
    """A linear-exact window from `lo` to `hi`; a constant image is shown mid-grey."""
    if hi <= lo:
        return Window(lo, 1.0, "linear-exact")
    return Window((lo + hi) / 2, hi - lo, "linear-exact")


def _percentile_window(values: np.ndarray, ds: Dataset, stored: np.ndarray) -> Window:
    """A window over the 0.5..99.5th percentile of the image's values, padding left out."""
    import numpy as np

    sample = values
    padding = ds.get("PixelPaddingValue")
    if padding is not None:
        kept = values[stored != padding]
        sample = kept if kept.size else values
    if sample.size > 1 << 18:  # a strided sample is enough for two percentiles
        sample = sample.ravel()[:: sample.size // (1 << 18)]
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return _range_window(lo, hi)


def _grayscale_by_table(stored: np.ndarray, ds: Dataset, window: Window | None) -> np.ndarray | None:
    """Integer pixels with a linear rescale: the chain computed once per stored value, then looked up.

    Exactly the per-pixel chain's result, ~10x faster on a 512x512 CT; None where it does not apply.
    """
    import numpy as np

    if stored.dtype.kind not in "iu" or "ModalityLUTSequence" in ds:
        return None
    if window is None and "VOILUTSequence" in ds and "WindowCenter" not in ds:
        return None
    lo, hi = int(stored.min()), int(stored.max())
    if hi - lo > 1 << 17:
        return None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    index = stored if lo == 0 and stored.dtype.kind == "u" else stored.astype(np.int32) - lo
    levels = np.arange(lo, hi + 1, dtype=np.float64) * slope + intercept
    window = window or _file_window(ds)
    if window is None:
        counts = np.bincount(index.ravel(), minlength=hi - lo + 1)
        padding = ds.get("PixelPaddingValue")
        if isinstance(padding, int) and lo <= padding <= hi and counts.sum() > counts[padding - lo]:
            counts[padding - lo] = 0
        cdf = np.cumsum(counts)
        first, last = (int(np.searchsorted(cdf, q * cdf[-1])) for q in (0.005, 0.995))
        window = _range_window(float(min(levels[first], levels[last])), float(max(levels[first], levels[last])))
    table = apply_window(levels, window)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        table = 255.0 - table
    result: np.ndarray = np.take(np.rint(table).astype(np.uint8), index)
    return result


def _grayscale(stored: np.ndarray, ds: Dataset, window: Window | None) -> np.ndarray:
    import numpy as np
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    fast = _grayscale_by_table(stored, ds, window)
    if fast is not None:
        return fast
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    if window is None and "VOILUTSequence" in ds and "WindowCenter" not in ds:
        lut = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), dtype=np.float32)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2] or 16)
        out = lut * (255.0 / float((1 << bits) - 1))
    else:
        out = apply_window(values, window or _file_window(ds) or _percentile_window(values, ds, stored))
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 255.0 - out
    result: np.ndarray = np.rint(out).astype(np.uint8)
    return result


def _colour(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    import numpy as np

    if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        from pydicom.pixels.processing import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2] or 16)
        return np.asarray(rgb >> (bits - 8) if bits > 8 else rgb, dtype=np.uint8)
    if arr.dtype.itemsize > 1:
        stored = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or 16)
        arr = arr >> max(stored - 8, 0)
    return np.asarray(np.clip(arr, 0, 255), dtype=np.uint8)


def display_values(arr: np.ndarray, ds: Dataset, window: Window | None) -> np.ndarray:
    """A decoded frame as 8-bit display values: (rows, columns) grayscale or (rows, columns, 3) RGB."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if arr.ndim == 3 or photometric == "PALETTE COLOR":
        return _colour(arr, ds)
    return _grayscale(arr, ds, window)


# ---------------------------------------------------------------- geometry and encoding


def _region(viewport: Viewport, columns: int, rows: int) -> tuple[tuple[float, float, float, float], bool, bool]:
    """The source box (left, top, right, bottom) and the horizontal and vertical flips."""
    if viewport.region is None:
        return (0.0, 0.0, float(columns), float(rows)), False, False
    sx, sy, sw, sh = viewport.region
    x0, y0 = sx or 0.0, sy or 0.0
    w = sw if sw is not None else columns - x0
    h = sh if sh is not None else rows - y0
    left, right = sorted((x0, x0 + w))
    top, bottom = sorted((y0, y0 + h))
    left, top = max(left, 0.0), max(top, 0.0)
    right, bottom = min(right, float(columns)), min(bottom, float(rows))
    if right - left < 1 or bottom - top < 1:
        raise InvalidInput(f"the viewport region lies outside the {columns}x{rows} image")
    return (left, top, right, bottom), w < 0, h < 0


def encode(pixels: np.ndarray, spec: RenderSpec) -> bytes:
    """8-bit display values to the requested media type, through the viewport."""
    from PIL import Image

    image = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    if spec.viewport is not None:
        box, flip_x, flip_y = _region(spec.viewport, image.width, image.height)
        bw, bh = box[2] - box[0], box[3] - box[1]
        scale = min(spec.viewport.width / bw, spec.viewport.height / bh)
        size = (max(1, round(bw * scale)), max(1, round(bh * scale)))
        if size != (image.width, image.height) or box != (0.0, 0.0, image.width, image.height):
            image = image.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
        if flip_x:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if flip_y:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    out = io.BytesIO()
    if spec.media_type == PNG:
        image.save(out, "PNG", compress_level=3)
    else:
        image.save(out, "JPEG", quality=spec.quality)
    return out.getvalue()


def read_frame(fh: BinaryIO, frame: int) -> tuple[np.ndarray, Dataset]:
    """Frame `frame` (from 1) of a stored file, decoded, and the file's other attributes.

    A file up to `WHOLE_FILE_BYTES` is parsed once; a larger one (a long multi-frame) twice, so that
    only the one frame's bytes are read.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels.utils import pixel_array

    from medcloud.dicomweb.codecs import can_decode, ensure_plugins

    ensure_plugins()
    whole = fh.seek(0, 2) <= WHOLE_FILE_BYTES
    fh.seek(0)
    try:
        ds = pydicom.dcmread(fh, force=True, stop_before_pixels=not whole)
        dims = (ds.get("Rows", 0), ds.get("Columns", 0), ds.get("SamplesPerPixel", 1))
        size = math.prod(int(d or 0) for d in dims)
        count = int(ds.get("NumberOfFrames", 1) or 1)
    except (InvalidDicomError, ValueError, TypeError, OSError) as exc:
        raise NotAcceptable(f"this instance cannot be rendered: {str(exc)[:200]}") from None
    if size > MAX_PIXELS:
        raise NotAcceptable(f"a frame of {size} samples is too large to render (at most {MAX_PIXELS}): ask for frames")
    if frame > count:
        raise NotFound(f"frame {frame} does not exist (the instance has {count})")
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") if meta is not None else "")
    try:
        if whole:
            arr = pixel_array(ds, index=frame - 1)
        else:
            fh.seek(0)
            arr = pixel_array(fh, index=frame - 1)
    except (InvalidDicomError, AttributeError, KeyError) as exc:
        raise NotAcceptable(f"this instance cannot be rendered: {str(exc)[:200]}") from None
    except (ValueError, NotImplementedError, RuntimeError, OSError) as exc:
        if ts and not can_decode(ts):
            raise NotAcceptable(f"pixel data in transfer syntax {ts} cannot be decoded here") from None
        raise NotAcceptable(f"the pixel data of this instance cannot be decoded: {str(exc)[:200]}") from None
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        return arr, ds
    raise NotAcceptable(f"pixel data of shape {arr.shape} cannot be rendered")


def render_frame(fh: BinaryIO, frame: int, spec: RenderSpec) -> bytes:
    """Frame `frame` (from 1) of a stored file, rendered as `spec` says."""
    arr, ds = read_frame(fh, frame)
    try:
        pixels = display_values(arr, ds, spec.window)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:  # damaged LUTs, odd attributes
        raise NotAcceptable(f"the pixels of this instance cannot be rendered: {str(exc)[:200]}") from None
    return encode(pixels, spec)


# ---------------------------------------------------------------- cache


class RenderCache:
    """Rendered images by (content hash, frame, rendering), least recently used dropped over `max_bytes`.

    Blobs are immutable and named by their hash, so an entry never goes stale; access is checked by the
    caller on every request, cached or not.
    """

    def __init__(self, max_bytes: int = 64 << 20, max_entry: int = 2 << 20) -> None:
        self.max_bytes, self.max_entry = max_bytes, max_entry
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: Hashable, data: bytes) -> None:
        if len(data) > self.max_entry:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._entries[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)

    def __len__(self) -> int:
        return len(self._entries)
