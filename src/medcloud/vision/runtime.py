"""The inference runtime: onnxruntime sessions, pre-processing, peak decoding and the crop vote.

Imports numpy, Pillow and onnxruntime only (never torch) so that a serving process starts fast.
"""

from __future__ import annotations

import io
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medcloud.errors import InvalidInput, TooLarge, UnsupportedFormat
from medcloud.pools import SharedPool
from medcloud.vision.labels import (
    CROP_CLASS_NAMES,
    CROP_CLASSES,
    LABELS,
    NON_BACTERIAL_LABELS,
    YEAST_LABELS,
    YEAST_NOTE,
    label_json,
)
from medcloud.vision.metrics import iou_matrix

STRIDE = 4
INPUT_LONG_SIDE = 320  # the detector sees the image with its longer side at this many pixels
TILE = 64  # crop size for the classifier, in detector-input pixels
PAD_VALUE = 210  # near the smear background, so padding does not look like an organism
MAX_IMAGE_PIXELS = 40_000_000
# Weight of the detector's bacterial boxes in the Gram verdict (the crop vote has 1 - this); see `gram_vote`.
DETECTOR_VOTE_WEIGHT = 0.5


@dataclass
class Detection:
    box: tuple[float, float, float, float]
    label: int
    score: float


@dataclass
class Prediction:
    """One image's answer: detections in original-image pixels, the crop vote and timing.

    `verdict` is the bacterial Gram group (None when no bacteria were recognised, e.g. a yeast-only
    smear); `yeast` is set when the detector saw yeast (`YEAST_NOTE` plus count and best score), beside
    the verdict on a mixed smear or instead of it on a yeast-only one. `excluded_crops` counts the
    crops left out of the vote because they held only yeast or red cells.

    `detections` hold one label per organism group (what is drawn and counted). A multi-scale model
    (`InferenceScales`) may also name `alternatives`: another label for a group already shown, from a
    scale that read it differently, at a lower score. `ranked()` is the model's whole ranked output
    (both), which detection metrics score; single-scale models have none.
    """

    detections: list[Detection]
    crop_votes: dict[str, int]
    verdict: str | None
    width: int
    height: int
    latency_ms: float
    yeast: dict[str, Any] | None = None
    excluded_crops: int = 0
    alternatives: list[Detection] = field(default_factory=list)

    def ranked(self) -> list[Detection]:
        """Detections and alternatives together, best score first (the model's full ranked output)."""
        return sorted([*self.detections, *self.alternatives], key=lambda d: -d.score)

    def counts(self) -> dict[str, int]:
        c = Counter(LABELS[d.label].code for d in self.detections)
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_json(self, model_version: str) -> dict[str, Any]:
        verdict = None
        if self.verdict is not None:
            en, ja = CROP_CLASS_NAMES[self.verdict]
            verdict = {"code": self.verdict, "en": en, "ja": ja}
        return {
            "model_version": model_version,
            "synthetic_model": True,
            "image": {"width": self.width, "height": self.height},
            "detections": [
                {"box": [round(v, 1) for v in d.box], "label": label_json(d.label), "score": round(d.score, 4)}
                for d in self.detections
            ],
            "counts": [
                {**label_json(next(i for i, lab in enumerate(LABELS) if lab.code == code)), "count": n}
                for code, n in self.counts().items()
            ],
            "alternatives": [
                {"box": [round(v, 1) for v in d.box], "label": label_json(d.label), "score": round(d.score, 4)}
                for d in self.alternatives
            ],
            "crop_votes": self.crop_votes,
            "crop_votes_excluded": self.excluded_crops,
            "verdict": verdict,
            "yeast": self.yeast,
            "answer": self.answer(),
            "latency_ms": round(self.latency_ms, 2),
        }

    def answer(self) -> dict[str, str]:
        """The smear's answer in words: the bacterial verdict, the yeast note, both, or neither."""
        en: list[str] = []
        ja: list[str] = []
        if self.verdict is not None:
            en.append(CROP_CLASS_NAMES[self.verdict][0])
            ja.append(CROP_CLASS_NAMES[self.verdict][1])
        if self.yeast is not None:
            en.append(YEAST_NOTE["en"])
            ja.append(YEAST_NOTE["ja"])
        if not en:
            return {"en": "no bacteria or yeast recognised", "ja": "細菌・酵母様真菌を認めず"}
        return {"en": "; ".join(en), "ja": "、".join(ja)}


@dataclass(frozen=True)
class Photo:
    """A decoded image: its RGB pixels, and the upright size of the photo as sent.

    `pixels` may be smaller than `width` x `height`: a large JPEG is decoded at a reduced scale by the
    JPEG decoder itself (`decode_photo(least_side=...)`); boxes are still given in the photo's own pixels.
    """

    pixels: NDArray[np.uint8]
    width: int
    height: int


def decode_image(data: bytes, max_bytes: int = 50 * 1024 * 1024) -> NDArray[np.uint8]:
    """Bytes of a PNG/JPEG/... photo to an upright RGB uint8 array; refuses what is not an image."""
    return decode_photo(data, max_bytes).pixels


def decode_photo(data: bytes, max_bytes: int = 50 * 1024 * 1024, least_side: int = 0) -> Photo:
    """`decode_image`, and with `least_side` a JPEG is decoded at the smallest of 1/2, 1/4 or 1/8 scale
    whose longer side is still at least `least_side` (libjpeg scales in the DCT: a 12-megapixel phone photo
    is read in a few milliseconds instead of a few hundred, and the model sees it at 320 pixels anyway)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidInput("empty body: send the image bytes")
    if len(data) > max_bytes:
        raise TooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise TooLarge(f"image is {im.width}x{im.height}; the limit is {MAX_IMAGE_PIXELS} pixels")
            width, height = im.size
            if least_side > 0 and im.format == "JPEG" and max(width, height) >= 2 * least_side:
                f = least_side / max(width, height)
                im.draft(im.mode, (max(1, math.ceil(width * f)), max(1, math.ceil(height * f))))
            orientation = _orientation(im)
            turned = orientation in (5, 6, 7, 8)  # width and height swap
            arr = _rgb8(_upright(im, orientation))
    except Image.DecompressionBombError as exc:  # Pillow refuses over 2x its own limit before our check
        raise TooLarge(f"image is over the limit of {MAX_IMAGE_PIXELS} pixels ({exc})") from exc
    except UnidentifiedImageError as exc:
        # Pillow's message names a Python object (`<_io.BytesIO object at 0x...>`): say what was wrong.
        raise UnsupportedFormat(
            "not a readable image: send PNG, JPEG, TIFF, BMP or WebP bytes (or a multipart 'image' part)"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedFormat(f"not a readable image: {_plain(str(exc))}") from exc
    return Photo(arr, height if turned else width, width if turned else height)


def _orientation(im: Any) -> int:
    """The EXIF orientation (1-8; 1 when absent). A damaged EXIF block does not make a photo unreadable:
    it counts as absent."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # Pillow's EXIF parser can raise many kinds of errors on a bad block
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(im: Any, orientation: int) -> Any:
    """The image as its camera held it: a phone photo's EXIF orientation applied.

    Browsers draw an upload upright (`createImageBitmap`, `<img>`), so boxes are returned in that frame;
    otherwise a photo taken with the phone turned would get its boxes drawn rotated on the page. The
    transpositions are EXIF's (as `ImageOps.exif_transpose`, without rewriting the EXIF block).
    """
    from PIL import Image

    t = Image.Transpose
    method = {
        2: t.FLIP_LEFT_RIGHT,
        3: t.ROTATE_180,
        4: t.FLIP_TOP_BOTTOM,
        5: t.TRANSPOSE,
        6: t.ROTATE_270,
        7: t.TRANSVERSE,
        8: t.ROTATE_90,
    }.get(orientation)
    return im if method is None else im.transpose(method)


def _rgb8(im: Any) -> NDArray[np.uint8]:
    """8-bit RGB of any Pillow mode.

    16- and 32-bit grey (a scientific camera's TIFF or PNG) is scaled by its bit depth: Pillow's own
    conversion clips it, which turns a 16-bit image white. Floating point is scaled to its maximum (or
    from 0..1). Transparent pixels are laid on white, the colour of a bright-field background.
    """
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = np.asarray(im, dtype=np.float64)
        top = float(grey.max()) if grey.size else 0.0
        if im.mode == "F":
            grey = grey * (255.0 if top <= 1.0 else 255.0 / top)
        else:
            grey = grey / 2.0 ** (max(8, int(top).bit_length()) - 8)
        g8 = np.clip(np.nan_to_num(grey), 0, 255).astype(np.uint8)
        return np.repeat(g8[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        white.alpha_composite(im.convert("RGBA"))
        im = white
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _plain(message: str) -> str:
    """A library's error message without Python object reprs or memory addresses."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", message)[:200]


def white_balance(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """Colour constancy for a smear (HWC or NHWC float 0..255): scale each channel so that the bright
    background (pixels above the 70th brightness percentile) becomes neutral grey-white at 225.

    This removes the lamp's colour cast and the exposure (halogen yellow, LED blue, a dim or bright camera)
    while leaving the stain contrast of the organisms, which is what tells Gram-positive from -negative.
    """
    shape = (-1, 1, 1, 3) if image.ndim == 4 else (1, 1, 3)
    gain = white_balance_gain(image).reshape(shape)
    out: NDArray[np.float32] = np.clip(image * gain, 0, 255).astype(np.float32)
    return out


def white_balance_gain(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per-image (n, 3) channel gains of `white_balance` (n = 1 for a single HWC image)."""
    lum = image.mean(axis=-1)
    flat = lum.reshape(lum.shape[0], -1) if image.ndim == 4 else lum.reshape(1, -1)
    k = int(flat.shape[1] * 0.7)
    thr = np.partition(flat, k, axis=1)[:, k]
    pix = image.reshape(flat.shape[0], -1, 3)
    sel = flat >= thr[:, None]
    ref = (pix * sel[..., None]).sum(axis=1) / np.maximum(sel.sum(axis=1), 1)[:, None]
    gain: NDArray[np.float32] = (225.0 / np.maximum(ref, 8.0)).astype(np.float32)
    return gain


def prepare(
    image: NDArray[np.uint8], long_side: int = INPUT_LONG_SIDE, colour: str = "none"
) -> tuple[NDArray[np.float32], float]:
    """Resize so the longer side is `long_side`, pad to a multiple of 16; returns NCHW float and the scale.

    `colour` is the model's input convention: "none" (raw RGB) or "white-balance" (`white_balance`).
    """
    return prepare_scales(image, (long_side,), colour, base=long_side)[long_side]


def prepare_scales(
    image: NDArray[np.uint8], sides: tuple[int, ...], colour: str = "none", base: int = INPUT_LONG_SIDE
) -> dict[int, tuple[NDArray[np.float32], float]]:
    """`prepare` at several long sides: {side: (NCHW float, scale)}.

    The `base` side is exactly `prepare(image, base, colour)`; the white-balance gain is taken once, from
    the base image, and used for every side; sides below the base are resized from the base image (cheaper
    than from the original), sides above it from the original.
    """
    # Sides above the base are resampled from the original: on another thread, beside the base's resize
    # (Pillow releases the GIL while it resamples), so a second detector scale does not pay its resize in
    # series. The pixels are the same as resizing one after the other.
    larger = {side: _RESIZE_POOL.get().submit(_resize, image, side) for side in sides if side > base}
    resized, scale = _resize(image, base)
    gain = white_balance_gain(resized[::2, ::2].astype(np.float32)) if colour == "white-balance" else None
    out: dict[int, tuple[NDArray[np.float32], float]] = {}
    for side in sides:
        if side == base:
            out[side] = (_canvas(resized, gain), scale)
            continue
        r, s = larger[side].result() if side in larger else _resize(image, side, source=resized)
        out[side] = (_canvas(r, gain), s)
    return out


_RESIZE_POOL = SharedPool(2, "medcloud-resize")  # `prepare_scales`'s larger sides


def _pil_resize(image: NDArray[np.uint8], nw: int, nh: int) -> Any:
    from PIL import Image

    return Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)


def _resize(
    image: NDArray[np.uint8], long_side: int, source: NDArray[np.uint8] | None = None
) -> tuple[NDArray[np.uint8], float]:
    """`image` at `long_side` and its scale; the pixels are resampled from `source` (a resized copy of
    `image`, cheaper to shrink) when given, the size and scale always come from `image`."""
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    src = image if source is None else source
    if (nh, nw) != src.shape[:2]:
        return np.asarray(_pil_resize(src, nw, nh)), scale
    return src, scale


def _canvas(resized: NDArray[np.uint8], gain: NDArray[np.float32] | None) -> NDArray[np.float32]:
    """The resized image padded to a multiple of 16 as NCHW float; with `gain`, white-balanced."""
    nh, nw = resized.shape[:2]
    ph, pw = -(-nh // 16) * 16, -(-nw // 16) * 16
    if gain is not None:
        # Written straight into the NCHW canvas: one float pass, no HWC float copy to transpose afterwards.
        out = np.full((1, 3, ph, pw), PAD_VALUE, dtype=np.float32)
        view = out[0, :, :nh, :nw]
        np.multiply(resized.transpose(2, 0, 1), gain.reshape(3, 1, 1), out=view)
        np.minimum(view, 255.0, out=view)
        return out
    canvas = np.full((ph, pw, 3), PAD_VALUE, dtype=np.uint8)
    canvas[:nh, :nw] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)


def decode_peaks(
    heat: NDArray[np.float32],
    reg: NDArray[np.float32],
    score_threshold: float = 0.05,
    top_k: int = 100,
    nms_iou: float = 0.6,
) -> list[Detection]:
    """Peaks of one heatmap (C, h, w) to boxes in detector-input pixels, with class-agnostic NMS."""
    _c, h, w = heat.shape
    flat = heat.reshape(-1)
    # The heatmap holds only its peaks (the max-pool is in the graph): the few cells over the threshold
    # are found first, and only those are ranked (a partition of the whole map cost ~1 ms per scale).
    idx = np.flatnonzero(flat >= score_threshold)
    if idx.size > top_k:
        idx = idx[np.argpartition(-flat[idx], top_k - 1)[:top_k]]
    idx = idx[np.lexsort((idx, -flat[idx]))]  # best score first; equal scores in map order
    cls = idx // (h * w)
    pix = idx % (h * w)
    ys, xs = pix // w, pix % w
    dx, dy = reg[0, ys, xs], reg[1, ys, xs]
    bw = np.exp(np.clip(reg[2, ys, xs], -4, 6)) * STRIDE
    bh = np.exp(np.clip(reg[3, ys, xs], -4, 6)) * STRIDE
    cx, cy = (xs + dx) * STRIDE, (ys + dy) * STRIDE
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    scores = flat[idx]
    keep = _nms(boxes, scores, nms_iou)
    out = []
    for i in keep:
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        out.append(Detection((x0, y0, x1, y1), int(cls[i]), float(scores[i])))
    return out


def _nms(boxes: NDArray[Any], scores: NDArray[Any], iou: float) -> list[int]:
    order = list(range(len(scores)))  # already sorted by score
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = np.zeros(len(order), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        xx0 = np.maximum(boxes[i, 0], boxes[:, 0])
        yy0 = np.maximum(boxes[i, 1], boxes[:, 1])
        xx1 = np.minimum(boxes[i, 2], boxes[:, 2])
        yy1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        over = inter / np.maximum(area[i] + area - inter, 1e-6)
        suppressed |= over > iou
    return keep


def merge_classwise(detections: list[Detection], iou: float = 0.5) -> list[Detection]:
    """Detections from several runs (scales) merged by NMS within each label; best score first.

    Each label keeps its own best box per organism group, so one group can be listed under two labels
    (the second at a lower score) when two scales disagree: that is what raises mAP50 (see docs/vision.md).
    """
    if not detections:
        return []
    dets = sorted(detections, key=lambda d: -d.score)
    boxes = np.array([d.box for d in dets], dtype=np.float32)
    scores = np.array([d.score for d in dets], dtype=np.float32)
    labels = np.array([d.label for d in dets], dtype=np.int64)
    keep: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep += [int(idx[k]) for k in _nms(boxes[idx], scores[idx], iou)]
    return [dets[i] for i in sorted(keep)]


def combine_scales(
    per_side: dict[int, list[Detection]], base: int, iou: float = 0.5, group_iou: float = 0.6, weight: float = 1.0
) -> tuple[list[Detection], list[Detection]]:
    """(detections, alternatives) of a multi-scale run; each list best first.

    The `base` run's detections stay the primary answer, exactly as the single-scale runtime gives them;
    a box of another scale becomes primary only where no primary box overlaps it by more than `group_iou`
    (an organism group the base scale missed). Every other box of the class-wise NMS merge of all scales
    (`merge_classwise`, IoU `iou`) that is not a same-label duplicate of a primary box is an alternative:
    another label or box for a group, as another scale read it; its score is multiplied by `weight`, so
    that it ranks below answers of the same confidence.
    """
    primary = list(per_side[base])
    others = sorted((d for side, dets in per_side.items() if side != base for d in dets), key=lambda d: -d.score)
    for d in others:
        if not primary or _iou_one(d.box, primary).max() <= group_iou:
            primary.append(d)
    alternatives = []
    for d in merge_classwise([d for dets in per_side.values() for d in dets], iou):
        same = [p for p in primary if p.label == d.label]
        if any(p is d for p in primary) or (same and _iou_one(d.box, same).max() > iou):
            continue
        alternatives.append(Detection(d.box, d.label, d.score * weight))
    alternatives.sort(key=lambda d: -d.score)
    primary.sort(key=lambda d: -d.score)
    return primary, alternatives


def _iou_one(box: tuple[float, float, float, float], others: list[Detection]) -> NDArray[np.float32]:
    """IoU of `box` with each of `others` (`metrics.iou_matrix`, one row)."""
    b = np.array([d.box for d in others], dtype=np.float32).reshape(-1, 4)
    row: NDArray[np.float32] = iou_matrix(np.array([box], dtype=np.float32), b)[0]
    return row


def tile_origins(hw: tuple[int, int], valid_hw: tuple[int, int], tile: int = TILE) -> list[tuple[int, int]]:
    """(y0, x0) of the tiles `tiles` cuts, in order, for a prepared image of height, width `hw`."""
    H, W = hw
    vh, vw = valid_hw
    out = []
    for y in range(0, max(vh - tile // 2, 1), tile):
        for x in range(0, max(vw - tile // 2, 1), tile):
            y0, x0 = min(y, max(H - tile, 0)), min(x, max(W - tile, 0))
            if y0 + tile <= H and x0 + tile <= W:
                out.append((y0, x0))
    return out


def tiles(prepared: NDArray[np.float32], valid_hw: tuple[int, int], tile: int = TILE) -> NDArray[np.float32]:
    """Non-overlapping tile x tile crops covering the valid (unpadded) area of a prepared NCHW image."""
    _, _, H, W = prepared.shape
    out = [prepared[0, :, y0 : y0 + tile, x0 : x0 + tile] for y0, x0 in tile_origins((H, W), valid_hw, tile)]
    return np.stack(out) if out else np.zeros((0, 3, tile, tile), dtype=np.float32)


def _intersections(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """Pairwise intersection areas of boxes [x0, y0, x1, y1]: shape (len(a), len(b))."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    out: NDArray[np.float32] = (np.clip(w, 0, None) * np.clip(h, 0, None)).astype(np.float32)
    return out


@dataclass
class GramVote:
    """The crop vote of one image with yeast and red cells taken out (see `gram_vote`)."""

    votes: dict[str, int]
    verdict: str | None
    yeast: dict[str, Any] | None
    excluded: int
    detector_votes: dict[str, float] | None = None


def gram_vote(
    probabilities: NDArray[np.float32],
    crop_boxes: NDArray[np.float32],
    detections: list[Detection],
    min_cover: float = 0.02,
    detector_weight: float = DETECTOR_VOTE_WEIGHT,
    yeast_floor: float | None = None,
    yeast_ratio: float | None = None,
) -> GramVote:
    """The crop vote as the reference design has it: yeast and red cells are not bacteria.

    `crop_boxes` are the crops' boxes in the detections' pixels. A crop that overlaps a yeast or
    red-cell box (by more than `min_cover` of its area) and no bacterial box does not vote. When the
    detector found organisms but none is a bacterium (a yeast-only or red-cell-only smear), there is no
    bacterial verdict; yeast boxes add the yeast note (`YEAST_NOTE`, with count and best score) whatever
    the verdict. With no detection at all the plain crop vote stands, as before.

    With bacterial boxes, the verdict weighs two opinions: the share of the voting crops each Gram group
    won (weight 1 - `detector_weight`) and the share of the bacterial boxes' summed scores each group's
    species hold (weight `detector_weight`). The crop classifier sees a 64-pixel tile, the detector a whole
    group in context; at low magnification the tiles alone call chains and clusters of cocci rods.

    `yeast_floor`: when yeast is seen, a bacterial verdict needs some bacterial box scoring at least
    min(`yeast_floor`, the best yeast score); weaker bacterial boxes beside yeast (debris and background read
    as cocci or rods) give the yeast note alone. None (what `GramStainModel.predict` passes): any bacterial
    box counts. `yeast_ratio` likewise, relative: some bacterial box must score at least `yeast_ratio`
    times the best yeast score. Measured by bench/vision_yeast_floor.py and not shipped (docs/vision.md,
    "Session 19").
    """
    n = len(probabilities)
    keep: NDArray[np.bool_] = np.ones(n, dtype=bool)
    bacterial = [d for d in detections if d.label not in NON_BACTERIAL_LABELS]
    other = [d for d in detections if d.label in NON_BACTERIAL_LABELS]
    if n and other:
        crops = np.asarray(crop_boxes, dtype=np.float32).reshape(-1, 4)
        area = np.maximum((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1]), 1e-6)
        cover = _intersections(crops, np.array([d.box for d in other], dtype=np.float32))
        on_other = (cover / area[:, None] > min_cover).any(axis=1)
        on_bacteria = (
            (_intersections(crops, np.array([d.box for d in bacterial], dtype=np.float32)) > 0).any(axis=1)
            if bacterial
            else np.zeros(n, dtype=bool)
        )
        keep = np.asarray(~(on_other & ~on_bacteria), dtype=bool)
    votes, verdict = crop_vote(probabilities, keep)
    detector_votes = None
    if detections and not bacterial:
        verdict = None
    elif bacterial and detector_weight > 0:
        detector_votes, verdict = _combined_verdict(votes, bacterial, detector_weight, verdict)
    yeast_dets = [d for d in detections if d.label in YEAST_LABELS]
    if yeast_dets and bacterial:
        best_yeast = max(d.score for d in yeast_dets)
        floors = [min(yeast_floor, best_yeast)] if yeast_floor is not None else []
        floors += [yeast_ratio * best_yeast] if yeast_ratio is not None else []
        if floors and all(d.score < max(floors) for d in bacterial):
            verdict = None
    yeast = (
        {**YEAST_NOTE, "count": len(yeast_dets), "score": round(max(d.score for d in yeast_dets), 4)}
        if yeast_dets
        else None
    )
    return GramVote(votes, verdict, yeast, int((~keep).sum()), detector_votes)


def _combined_verdict(
    votes: dict[str, int], bacterial: list[Detection], weight: float, crop_verdict: str | None
) -> tuple[dict[str, float], str | None]:
    """`gram_vote`'s verdict from crop shares and detector score shares; ties go to the crop vote's answer."""
    groups = [c for c in CROP_CLASSES if c != "background"]
    det = dict.fromkeys(groups, 0.0)
    for d in bacterial:
        det[LABELS[d.label].crop_class] += d.score
    crop_total = sum(votes[c] for c in groups)
    det_total = sum(det.values())
    mixed = {
        c: (1 - weight) * (votes[c] / crop_total if crop_total else 0.0)
        + weight * (det[c] / det_total if det_total else 0.0)
        for c in groups
    }
    best = max(mixed.values())
    if best <= 0:
        return det, crop_verdict
    tied = [c for c in groups if mixed[c] >= best - 1e-9]
    verdict = crop_verdict if crop_verdict in tied else tied[0]
    return {c: round(v, 4) for c, v in det.items()}, verdict


def crop_vote(
    probabilities: NDArray[np.float32], keep: NDArray[np.bool_] | None = None
) -> tuple[dict[str, int], str | None]:
    """Majority vote over crops, background excluded; None when every crop is background.

    `keep` (one flag per crop) leaves crops out of the vote altogether (see `gram_vote`).
    """
    if keep is not None and len(probabilities):
        probabilities = probabilities[np.asarray(keep, dtype=bool)]
    winners = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=np.int64)
    votes = {name: int((winners == i).sum()) for i, name in enumerate(CROP_CLASSES)}
    counted = {k: v for k, v in votes.items() if k != "background" and v > 0}
    if not counted:
        return votes, None
    best = max(counted.values())
    # Ties go to the class whose crops were most confident in total, so the answer never depends on order.
    tied = [k for k, v in counted.items() if v == best]
    if len(tied) > 1:
        conf = {k: float(probabilities[winners == CROP_CLASSES.index(k), CROP_CLASSES.index(k)].sum()) for k in tied}
        return votes, max(tied, key=lambda k: conf[k])
    return votes, tied[0]


def _training_records(model_dir: Path) -> Iterator[dict[str, Any]]:
    """A model's training record: its training.json, then the card's copy of it (`training`), each if present."""
    import json

    for name in ("training.json", "card.json"):
        path = model_dir / name
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            yield data if name == "training.json" else data.get("training", {})


def input_colour(model_dir: Path) -> str:
    """The colour convention a model was trained with: training.json (or the card's copy of it) "colour";
    models from before colour constancy have none and get raw RGB."""
    return next((str(r["colour"]) for r in _training_records(model_dir) if r.get("colour")), "none")


@dataclass(frozen=True)
class InferenceScales:
    """How a model is run: the detector at each long side in `sides`, boxes merged by class-wise NMS
    (IoU `iou`); the Gram verdict's detector half uses only the `verdict_side` run, the crops are always
    cut at `INPUT_LONG_SIDE`. One side (the default) is the single-scale runtime of every older model."""

    sides: tuple[int, ...] = (INPUT_LONG_SIDE,)
    iou: float = 0.5
    verdict_side: int = INPUT_LONG_SIDE
    alternative_weight: float = 0.5  # an alternative's score is its own times this (ranked below the answer)

    def __post_init__(self) -> None:
        if not self.sides or any(not 32 <= s <= 2048 for s in self.sides) or len(set(self.sides)) != len(self.sides):
            raise InvalidInput(f"inference sides must be distinct long sides of 32-2048 pixels, not {self.sides}")
        if self.verdict_side not in self.sides:
            raise InvalidInput(f"the verdict side {self.verdict_side} must be one of the sides {self.sides}")
        if not 0 < self.iou <= 1:
            raise InvalidInput(f"NMS IoU must be in (0, 1], not {self.iou}")
        if not 0 <= self.alternative_weight <= 1:
            raise InvalidInput(f"the alternative weight must be in [0, 1], not {self.alternative_weight}")

    def to_json(self) -> dict[str, Any]:
        return {
            "sides": list(self.sides),
            "merge": "answers: the verdict side's boxes + groups only other sides found; "
            "alternatives: class-wise NMS of all sides"
            if len(self.sides) > 1
            else "single scale",
            "iou": self.iou,
            "verdict_side": self.verdict_side,
            "alternative_weight": self.alternative_weight,
        }


def inference_scales(model_dir: Path) -> InferenceScales:
    """The inference recipe a model's `training.json` (or its card's copy) records under "inference";
    a model that records none is run at one scale, `INPUT_LONG_SIDE`, as before. Only the first record
    counts: a training.json without the key means single scale, whatever the card copied earlier."""
    spec = next(_training_records(model_dir), {}).get("inference")
    if not spec:
        return InferenceScales()
    return InferenceScales(
        tuple(int(v) for v in spec["sides"]),
        float(spec.get("iou", 0.5)),
        int(spec.get("verdict_side", INPUT_LONG_SIDE)),
        float(spec.get("alternative_weight", 0.5)),
    )


def session_options(threads: int) -> Any:
    """onnxruntime options for serving on a small CPU: `threads` intra-op threads that do not busy-wait.

    By default onnxruntime's worker threads spin for a while after each run; on two cores they then compete
    with the numpy work between runs (resize, white balance, crops, vote) and with the next request's
    parsing. Measured with `bench/vision.py latency` on a 2-core VM: full pipeline p50 34-40 ms spinning,
    21-22 ms without.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class GramStainModel:
    """Both ONNX models of one registry version, loaded once; thread-safe `predict`."""

    def __init__(self, model_dir: Path, threads: int = 2, scales: InferenceScales | None = None) -> None:
        """`scales` overrides the model's recorded inference recipe (`inference_scales`), e.g.
        `InferenceScales()` for the single-scale runtime of older releases."""
        import onnxruntime as ort

        opts = session_options(threads)
        self.model_dir = model_dir
        self.detector = ort.InferenceSession(str(model_dir / "detector.onnx"), opts, providers=["CPUExecutionProvider"])
        classifier = model_dir / "classifier.onnx"
        self.classifier = (
            ort.InferenceSession(str(classifier), opts, providers=["CPUExecutionProvider"])
            if classifier.exists()
            else None
        )
        self._lock = threading.Lock()
        self.colour = input_colour(model_dir)
        self.scales = scales if scales is not None else inference_scales(model_dir)

    @property
    def decode_side(self) -> int:
        """The least long side a photo may be decoded at (`decode_photo`) without the model losing
        anything: twice its largest input side, so the resize to that side still averages pixels."""
        return 2 * max((*self.scales.sides, INPUT_LONG_SIDE))

    def predict_photo(self, photo: Photo, score_threshold: float = 0.25) -> Prediction:
        """`predict` on a decoded photo; boxes in the photo's own pixels even when it was decoded smaller."""
        return self.predict(photo.pixels, score_threshold, frame=(photo.width, photo.height))

    def predict(
        self, image: NDArray[np.uint8], score_threshold: float = 0.25, frame: tuple[int, int] | None = None
    ) -> Prediction:
        """Detections, crop vote and verdict for one RGB image. `frame` is the (width, height) the boxes are
        given in when `image` is a reduced decode of a larger photo (default: the image's own size)."""
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        fw, fh = frame or (w, h)
        rx, ry = fw / w, fh / h  # image pixels -> photo pixels (1 unless decoded at a reduced scale)
        sides = self.scales.sides
        inputs = prepare_scales(image, tuple(dict.fromkeys((*sides, INPUT_LONG_SIDE))), colour=self.colour)
        per_side: dict[int, list[Detection]] = {}
        for side in sides:
            xs, sc = inputs[side]
            heat, reg = self.detector.run(None, {"image": xs})
            per_side[side] = [
                Detection(
                    (
                        max(0.0, d.box[0] * rx / sc),
                        max(0.0, d.box[1] * ry / sc),
                        min(float(fw), d.box[2] * rx / sc),
                        min(float(fh), d.box[3] * ry / sc),
                    ),
                    d.label,
                    d.score,
                )
                for d in decode_peaks(heat[0], reg[0], score_threshold=score_threshold)
            ]
        alternatives: list[Detection] = []
        if len(sides) == 1:
            dets = per_side[sides[0]]
        else:
            dets, alternatives = combine_scales(
                per_side, self.scales.verdict_side, self.scales.iou, weight=self.scales.alternative_weight
            )
        # The vote's detector half uses one scale's boxes (the rule was chosen on them; see docs/vision.md).
        vote_dets = per_side[self.scales.verdict_side]
        x, scale = inputs[INPUT_LONG_SIDE]
        # Without a classifier there is no verdict, but yeast boxes still give the yeast note.
        vote = gram_vote(np.zeros((0, len(CROP_CLASSES)), np.float32), np.zeros((0, 4), np.float32), vote_dets)
        if self.classifier is not None:
            valid = (round(h * scale), round(w * scale))
            crops = tiles(x, valid)
            if len(crops):
                probs = self.classifier.run(None, {"crops": crops})[0]
                origins = np.array(tile_origins(x.shape[2:], valid), dtype=np.float32).reshape(-1, 2)
                crop_boxes = np.stack(
                    [origins[:, 1], origins[:, 0], origins[:, 1] + TILE, origins[:, 0] + TILE], axis=1
                ) / np.float32(scale)
                crop_boxes *= np.array([rx, ry, rx, ry], dtype=np.float32)  # the detections' frame
                vote = gram_vote(probs, crop_boxes, vote_dets)
        return Prediction(
            dets,
            vote.votes,
            vote.verdict,
            fw,
            fh,
            (time.perf_counter() - t0) * 1000,
            vote.yeast,
            vote.excluded,
            alternatives,
        )


@dataclass
class Classification:
    """One image's answer from a federated image classifier (card task `FL_TASK`): the class
    probabilities, best first. Trained on SYNTHETIC images: a demonstration, not a diagnosis."""

    labels: tuple[str, ...]
    probabilities: list[float]
    width: int
    height: int
    latency_ms: float

    def to_json(self, model_version: str) -> dict[str, Any]:
        ranked = sorted(zip(self.labels, self.probabilities, strict=True), key=lambda lp: -lp[1])
        return {
            "model_version": model_version,
            "synthetic_model": True,
            "image": {"width": self.width, "height": self.height},
            "label": ranked[0][0],
            "score": round(ranked[0][1], 4),
            "scores": [{"label": label, "score": round(p, 4)} for label, p in ranked],
            "latency_ms": round(self.latency_ms, 2),
        }


class ImageClassifier:
    """A federated image classifier (`medcloud fl train-images`, or the Flower images task): one
    ONNX file whose input and labels its card names; thread-safe `predict`."""

    def __init__(self, model_dir: Path, card: dict[str, Any], threads: int = 2) -> None:
        import onnxruntime as ort

        spec = card.get("input") or {}
        shape = spec.get("shape") or []
        self.labels = tuple(str(x) for x in card.get("labels") or ())
        if len(shape) != 4 or shape[1] != 3 or not self.labels:
            raise InvalidInput(f"{model_dir}: the card must name an RGB NCHW input shape and the labels")
        self.size = (int(shape[2]), int(shape[3]))
        self.input_name = str(spec.get("name", "image"))
        self.session = ort.InferenceSession(
            str(model_dir / "model.onnx"), session_options(threads), providers=["CPUExecutionProvider"]
        )

    def prepare(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        """RGB uint8 (h, w, 3) to the model's input: resized (bilinear), 0..1, (1, 3, H, W)."""
        from PIL import Image

        h, w = self.size
        if image.shape[:2] != (h, w):
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
        return np.ascontiguousarray(image.astype(np.float32).transpose(2, 0, 1)[None] / np.float32(255.0))

    @property
    def decode_side(self) -> int:
        """The least long side a photo may be decoded at (`decode_photo`): twice the model's input."""
        return 2 * max(self.size)

    def predict_photo(self, photo: Photo, score_threshold: float = 0.0) -> Classification:
        return self.predict(photo.pixels, score_threshold, frame=(photo.width, photo.height))

    def predict(
        self, image: NDArray[np.uint8], score_threshold: float = 0.0, frame: tuple[int, int] | None = None
    ) -> Classification:
        """`score_threshold` is the detector's; a classifier always answers every class's probability.
        `frame` is the photo's (width, height) when `image` is a reduced decode of it."""
        t0 = time.perf_counter()
        logits = np.asarray(self.session.run(None, {self.input_name: self.prepare(image)})[0][0], dtype=np.float64)
        if logits.size != len(self.labels):
            raise InvalidInput(f"the model answered {logits.size} scores for {len(self.labels)} labels")
        p = np.exp(logits - logits.max())
        p /= p.sum()
        w, h = frame or (image.shape[1], image.shape[0])
        return Classification(self.labels, [float(v) for v in p], w, h, (time.perf_counter() - t0) * 1000)
