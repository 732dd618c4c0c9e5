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
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from medcloud.dicomweb.media import MediaRange, NotAcceptable, Offer, negotiate, parse_accept
from medcloud.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import numpy as np
    from pydicom import Dataset

__all__ = [
    "JPEG",
    "PNG",
    "RenderCache",
    "RenderSpec",
    "Viewport",
    "Window",
    "parse_render_query",
    "render_frame",
]

JPEG, PNG = "image/jpeg", "image/png"
# Single images first; a client that names multipart/related gets the same images as parts.
OFFERS = [Offer(JPEG), Offer(PNG), Offer("multipart/related", JPEG), Offer("multipart/related", PNG)]
WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
MAX_VIEWPORT = 8192
THUMBNAIL_SIZE = 128
# Query parameters PS3.18 defines for rendered resources that are accepted and not acted on.
_IGNORED = frozenset({"annotation", "charset", "iccprofile"})


@dataclass(frozen=True)
class Window:
    """A VOI window on modality values (PS3.3 C.11.2.1.2): centre, width and function."""

    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    """The output box (`width` x `height`) and an optional source region `(sx, sy, sw, sh)`.

    Region members left empty are None (`viewport=256,256,,,100,100`); a negative width or height flips.
    """

    width: int
    height: int
    region: tuple[float | None, float | None, float | None, float | None] | None = None


@dataclass(frozen=True)
class RenderSpec:
    """What to make: media type, window, viewport, JPEG quality; `multipart` when parts were asked for."""

    media_type: str = JPEG
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = 90
    multipart: bool = False
    ignored: tuple[str, ...] = ()

    def key(self) -> Hashable:
        """What distinguishes two renderings of one frame (for the cache)."""
        return (self.media_type, self.window, self.viewport, self.quality if self.media_type == JPEG else 0)


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{what} must be a number, not {text[:30]!r}") from None
    if not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number, not {text[:30]!r}")
    return value


def parse_window(text: str) -> Window:
    """`center,width[,function]`; InvalidInput for anything else."""
    items = [t.strip() for t in text.split(",")]
    if len(items) not in (2, 3):
        raise InvalidInput("window is center,width[,function] (function: linear, linear-exact, sigmoid)")
    center, width = _number(items[0], "window center"), _number(items[1], "window width")
    function = items[2].lower().replace("_", "-") if len(items) == 3 and items[2] else "linear"
    if function not in WINDOW_FUNCTIONS:
        raise InvalidInput(f"window function {items[2][:30]!r} is not one of {', '.join(WINDOW_FUNCTIONS)}")
    if (function == "linear" and width < 1) or width <= 0:
        raise InvalidInput(f"window width {items[1][:30]!r} is too small (linear needs >= 1, others > 0)")
    return Window(center, width, function)


def parse_viewport(text: str) -> Viewport:
    """`vw,vh[,sx,sy,sw,sh]`, region members may be empty; InvalidInput for anything else."""
    items = [t.strip() for t in text.split(",")]
    if len(items) not in (2, 6):
        raise InvalidInput("viewport is vw,vh or vw,vh,sx,sy,sw,sh")
    size: list[int] = []
    for item, what in zip(items[:2], ("width", "height"), strict=True):
        if not item.isdigit() or not 1 <= int(item) <= MAX_VIEWPORT:
            raise InvalidInput(f"viewport {what} must be an integer from 1 to {MAX_VIEWPORT}, not {item[:30]!r}")
        size.append(int(item))
    if len(items) == 2:
        return Viewport(size[0], size[1])
    sx, sy, sw, sh = (None if not t else _number(t, f"viewport {n}") for t, n in zip(items[2:], "xywh", strict=True))
    if (sx is not None and sx < 0) or (sy is not None and sy < 0) or sw == 0 or sh == 0:
        raise InvalidInput("viewport sx, sy must be >= 0 and sw, sh non-zero")
    return Viewport(size[0], size[1], (sx, sy, sw, sh))


def parse_render_query(
    items: Iterable[tuple[str, str]], accept_header: str | None, *, thumbnail: bool = False, many: bool = False
) -> RenderSpec:
    """The rendering a request asks for: query parameters, and `accept=` (which wins) or the Accept header.

    A thumbnail is one image; a resource of `many` images prefers multipart/related when the client
    leaves the choice to us (`*/*`).
    """
    params: dict[str, str] = {}
    accept_params: list[str] = []
    ignored: list[str] = []
    for name, value in items:
        if name == "accept":
            accept_params.append(value)
        elif name in ("window", "viewport", "quality"):
            if name in params:
                raise InvalidInput(f"{name} is given more than once")
            params[name] = value
        else:
            ignored.append(name[:40])
    accept: list[MediaRange] = parse_accept(",".join(accept_params) if accept_params else accept_header)
    offers = OFFERS[:2] if thumbnail else OFFERS[2:] + OFFERS[:2] if many else OFFERS
    offer, _ = negotiate(accept, offers, what="a thumbnail" if thumbnail else "a rendered image")
    quality = 75 if thumbnail else 90
    if "quality" in params:
        text = params["quality"].strip()
        if not text.isdigit() or not 1 <= int(text) <= 100:
            raise InvalidInput(f"quality is an integer from 1 to 100, not {text[:30]!r}")
        quality = int(text)
    window = parse_window(params["window"]) if "window" in params else None
    viewport = parse_viewport(params["viewport"]) if "viewport" in params else None
    if viewport is None and thumbnail:
        viewport = Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    media = offer.part_type or offer.media_type
    return RenderSpec(media, window, viewport, quality, offer.part_type is not None, tuple(sorted(set(ignored))))


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
    index = stored.astype(np.intp) - lo
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
    result: np.ndarray = np.rint(table).astype(np.uint8)[index]
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
    """Frame `frame` (from 1) of a stored file, decoded, and the file's other attributes."""
    from pydicom import Dataset
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels.utils import pixel_array

    from medcloud.dicomweb.codecs import can_decode, ensure_plugins

    ensure_plugins()
    ds = Dataset()
    try:
        arr = pixel_array(fh, ds_out=ds, index=frame - 1)
    except (InvalidDicomError, AttributeError, KeyError) as exc:
        raise NotAcceptable(f"this instance cannot be rendered: {str(exc)[:200]}") from None
    except (ValueError, NotImplementedError, RuntimeError, OSError) as exc:
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        if ts and not can_decode(ts):
            raise NotAcceptable(f"pixel data in transfer syntax {ts} cannot be decoded here") from None
        if "out of range" in str(exc) or "index" in str(exc).lower():
            raise NotFound(f"frame {frame} does not exist") from None
        raise NotAcceptable(f"the pixel data of this instance cannot be decoded: {str(exc)[:200]}") from None
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        return arr, ds
    raise NotAcceptable(f"pixel data of shape {arr.shape} cannot be rendered")


def render_frame(fh: BinaryIO, frame: int, spec: RenderSpec) -> bytes:
    """Frame `frame` (from 1) of a stored file, rendered as `spec` says."""
    arr, ds = read_frame(fh, frame)
    return encode(display_values(arr, ds, spec.window), spec)


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
