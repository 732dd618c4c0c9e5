"""Training and ONNX export of the detector and the crop classifier (imports torch; never used to serve).

Everything is trained from scratch on SYNTHETIC smears (`medcloud.vision.synth`) from the training sites
only; evaluation then runs the exported ONNX models through the serving runtime.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medcloud.vision.labels import CROP_CLASSES, NUM_CLASSES, crop_class_of
from medcloud.vision.runtime import INPUT_LONG_SIDE, STRIDE, TILE, _pil_resize, white_balance_gain
from medcloud.vision.synth import SITES, TRAINING_SITES, render_smear

Progress = Callable[[str], None]


@dataclass
class TrainConfig:
    images: int = 2000
    hi_res_fraction: float = 0.25  # share rendered at 640 then downscaled like the serving path
    size: int = INPUT_LONG_SIDE
    det_steps: int = 3000
    cls_steps: int = 800
    det_minutes: float = 0.0  # > 0: the schedule follows wall time and stops at this budget (shared CPUs)
    cls_minutes: float = 0.0
    batch: int = 16
    crop: int = 160  # detector trains on random crops of this size (a quarter of the pixels: CPU budget)
    cls_batch: int = 96
    lr: float = 3e-3
    seed: int = 0
    threads: int = 2
    sites: tuple[str, ...] = TRAINING_SITES
    init: str | None = None  # folder with detector.pt / classifier.pt to continue from
    boxes: str = "group"  # annotation convention of the rendered boxes: "group" or "cell" (synth.render_smear)
    colour: str = "white-balance"  # input convention (runtime.prepare): "white-balance" or "none"
    random_share: float = 0.7  # share of training smears drawn with domain randomisation (site-random)
    stain_jitter: float = 0.08  # std of the optical-density mixing jitter (HED-style stain augmentation)
    scale_jitter: float = 0.0  # > 0: detector images zoomed by exp(U(-j, j)) before the crop (multi-scale training)
    vector_share: float = 0.0  # share of training smears drawn by the second renderer (synth_vector, "ood-varied")
    # share of synth.py smears whose organisms are drawn at 0.45-0.8 of their size against the red cells
    # (`SiteStyle.organism_size`): textbook proportions, as other renderers and real smears have them
    textbook_share: float = 0.0
    # share of synth.py smears drawn at 1.3-2x magnification (a 100x objective with a camera coupler): large
    # organisms, which otherwise come only from site-random's log-uniform 0.55-2x draw (a third of its smears)
    # while the named styles sit near 1x and the textbook and vector shares draw small organisms
    highmag_share: float = 0.0
    # > 0: the crop classifier's tiles are cut at scales exp(linspace(-j, j, 5)) of the 64-pixel tile and
    # resized to it (a region 1/f as wide, f < 1 zooming out), a scale drawn evenly per crop, so the vote
    # sees organisms smaller and larger than the rendered ones (a 60x objective, a phone held far back)
    cls_scale_jitter: float = 0.0
    # share of synth.py smears with no bacterium at all (hard negatives): Candida alone or red cells alone,
    # half each, over debris and crystal-violet precipitate (0.3-1) at 0.5-1x magnification, where most
    # smears hold bacteria and debris is drawn in only some of site-random's; each in its own site's style
    negative_share: float = 0.0


@dataclass
class Sample:
    image: NDArray[np.uint8]
    boxes: NDArray[np.float32]
    labels: NDArray[np.int64]


def render_training_set(cfg: TrainConfig, progress: Progress | None = None, cache: Path | None = None) -> list[Sample]:
    """Synthetic training smears, sites round-robin; seeds 0..N-1 offset by cfg.seed (eval uses others).

    With `cache`, the rendered set is stored as .npz keyed by the parameters that define it.
    """

    key = (
        f"smears-v4-{cfg.images}-{cfg.hi_res_fraction}-{cfg.size}-{cfg.seed}-{cfg.boxes}-{cfg.random_share}"
        f"-{'_'.join(cfg.sites)}{f'-vector{cfg.vector_share}' if cfg.vector_share else ''}"
        f"{f'-textbook{cfg.textbook_share}' if cfg.textbook_share else ''}"
        f"{f'-highmag{cfg.highmag_share}' if cfg.highmag_share else ''}"
        f"{f'-negative{cfg.negative_share}' if cfg.negative_share else ''}.npz"
    )
    if cache is not None and (cache / key).exists():
        with np.load(cache / key) as z:
            images, boxes, labels, counts = z["images"], z["boxes"], z["labels"], z["counts"]
        ends = np.cumsum(counts)
        return [
            Sample(images[i], boxes[e - c : e], labels[e - c : e])
            for i, (c, e) in enumerate(zip(counts, ends, strict=True))
        ]

    import multiprocessing

    jobs = [(cfg, i) for i in range(cfg.images)]
    out: list[Sample] = []
    if cfg.threads > 1 and cfg.images >= 50:
        with multiprocessing.get_context("fork").Pool(cfg.threads) as pool:
            for sample in pool.imap(_render_one, jobs, chunksize=8):
                out.append(sample)
                if progress and len(out) % 200 == 0:
                    progress(f"rendered {len(out)}/{cfg.images} synthetic smears")
    else:
        out = [_render_one(job) for job in jobs]
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache / key,
            images=np.stack([s.image for s in out]),
            boxes=np.concatenate([s.boxes for s in out]).reshape(-1, 4),
            labels=np.concatenate([s.labels for s in out]),
            counts=np.array([len(s.labels) for s in out]),
        )
    return out


def _evenly_chosen(i: int, share: float, step: float, offset: float = 0.0) -> bool:
    """Whether item i is among `share` of the items, spread evenly by the low-discrepancy sequence
    (i * step + offset) mod 1; each choice below has its own step, so the choices are independent."""
    return (i * step + offset) % 1.0 < share


# Extra seed word for a textbook-size smear's random draws (its size, its style), apart from the smear's own.
_TEXTBOOK_STREAM = 0x7E87
# The same for a high-magnification smear's magnification.
_HIGHMAG_STREAM = 0x419A
# The same for a hard negative's contents, debris and magnification.
_NEGATIVE_STREAM = 0x2E6A


def training_site(cfg: TrainConfig, i: int) -> str:
    """Site of training smear i: domain randomisation for `random_share` of them, the named styles otherwise."""
    named = [s for s in cfg.sites if s != "site-random"]
    if "site-random" in cfg.sites and (not named or _evenly_chosen(i, cfg.random_share, 0.6180339887)):
        return "site-random"
    return named[i % len(named)]


def drawn_by_vector(cfg: TrainConfig, i: int) -> bool:
    """Whether training smear i comes from the second renderer (`synth_vector`): `vector_share` of them,
    spread evenly over the set by a low-discrepancy sequence independent of `training_site`'s."""
    return cfg.vector_share > 0 and _evenly_chosen(i, cfg.vector_share, 0.7548776662, 0.31)


def textbook_size(cfg: TrainConfig, i: int) -> float | None:
    """The organisms' size against the red cells for training smear i (`SiteStyle.organism_size`): drawn
    log-uniform from 0.45-0.8 for `textbook_share` of the smears (a low-discrepancy sequence independent of
    `training_site`'s and `drawn_by_vector`'s), None (the renderer's own 1.0) for the rest."""
    if cfg.textbook_share <= 0 or not _evenly_chosen(i, cfg.textbook_share, 0.5698402910, 0.17):
        return None
    rng = np.random.default_rng((cfg.seed, i, _TEXTBOOK_STREAM))
    return float(np.exp(rng.uniform(math.log(0.45), math.log(0.8))))


def high_magnification(cfg: TrainConfig, i: int) -> float | None:
    """The magnification of training smear i when it is among `highmag_share` of the smears (log-uniform
    1.3-2x; a low-discrepancy sequence independent of the other choices), None (the style's own) otherwise."""
    if cfg.highmag_share <= 0 or not _evenly_chosen(i, cfg.highmag_share, 0.8566748839, 0.53):
        return None
    rng = np.random.default_rng((cfg.seed, i, _HIGHMAG_STREAM))
    return float(np.exp(rng.uniform(math.log(1.3), math.log(2.0))))


@dataclass(frozen=True)
class HardNegative:
    """What a hard-negative training smear holds: `candida` yeast groups (0: red cells alone), its debris
    amount and its magnification (`SiteStyle.debris`, `SiteStyle.magnification`)."""

    candida: int
    debris: float
    magnification: float


def hard_negative(cfg: TrainConfig, i: int) -> HardNegative | None:
    """The hard negative training smear i is, when it is among `negative_share` of the smears (a
    low-discrepancy sequence independent of the other choices), None otherwise. Half are Candida alone
    (2-8 yeast groups per reference field, more when zoomed out), half red cells alone; debris 0.3-1,
    magnification log-uniform 0.5-1x, where false bacterial boxes on debris and background were found."""
    if cfg.negative_share <= 0 or not _evenly_chosen(i, cfg.negative_share, 0.4142135624, 0.71):
        return None
    rng = np.random.default_rng((cfg.seed, i, _NEGATIVE_STREAM))
    magnification = float(np.exp(rng.uniform(math.log(0.5), math.log(1.0))))
    debris = float(rng.uniform(0.3, 1.0))
    candida = int(min(30, rng.integers(2, 9) / magnification**2)) if rng.uniform() < 0.5 else 0
    return HardNegative(candida, debris, magnification)


def _halved(image: NDArray[np.uint8], boxes: NDArray[np.float32], labels: NDArray[np.int64], size: int) -> Sample:
    """A smear rendered at twice the training size, reduced like the serving path's resize."""
    return Sample(np.asarray(_pil_resize(image, size, size)), (boxes / 2).astype(np.float32), labels)


def _render_one(job: tuple[TrainConfig, int]) -> Sample:
    cfg, i = job
    seed = cfg.seed * 10_000_000 + i
    if drawn_by_vector(cfg, i):
        from medcloud.vision.synth_vector import render as render_vector

        if cfg.boxes != "group":
            raise ValueError("the second renderer draws group boxes only; use --vector-share 0 with --boxes cell")
        v = render_vector(seed, "ood-varied", cfg.size * 2)
        return _halved(v.image, v.boxes, v.labels, cfg.size)
    site = training_site(cfg, i)
    style = None
    size = textbook_size(cfg, i)
    if size is not None:
        style = replace(SITES[site].sample(np.random.default_rng((seed, _TEXTBOOK_STREAM))), organism_size=size)
    magnification = high_magnification(cfg, i)
    if magnification is not None:
        if style is None:
            style = SITES[site].sample(np.random.default_rng((seed, _HIGHMAG_STREAM)))
        style = replace(style, magnification=magnification)
    negative = hard_negative(cfg, i)
    species = None
    if negative is not None:
        # a hard negative's magnification and debris replace the style's (and a high-magnification draw)
        if style is None:
            style = SITES[site].sample(np.random.default_rng((seed, _NEGATIVE_STREAM)))
        style = replace(style, magnification=negative.magnification, debris=negative.debris)
        species = ["candida"] * negative.candida
    if i < int(cfg.images * cfg.hi_res_fraction):
        s = render_smear(seed, site, (cfg.size * 2, cfg.size * 2), 1.0, species=species, style=style, boxes=cfg.boxes)
        return _halved(s.image, s.boxes, s.labels, cfg.size)
    s = render_smear(seed, site, (cfg.size, cfg.size), cfg.size / 640, species=species, style=style, boxes=cfg.boxes)
    return Sample(s.image, s.boxes, s.labels)


def _augment(
    img: NDArray[np.uint8], boxes: NDArray[np.float32], rng: np.random.Generator
) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Flips and 90-degree turns (a smear has no up), exact for boxes."""
    h, w = img.shape[:2]
    b = boxes.copy()
    if rng.uniform() < 0.5:
        img = img[:, ::-1]
        b[:, [0, 2]] = w - b[:, [2, 0]]
    if rng.uniform() < 0.5:
        img = img[::-1]
        b[:, [1, 3]] = h - b[:, [3, 1]]
    if rng.uniform() < 0.5:
        img = img.transpose(1, 0, 2)
        b = b[:, [1, 0, 3, 2]]
    return np.ascontiguousarray(img), b


def _zoom(
    img: NDArray[np.uint8], boxes: NDArray[np.float32], jitter: float, least: int, rng: np.random.Generator
) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Multi-scale training: the image and its boxes resized by exp(U(-jitter, jitter)), never below `least`.

    The generator already draws magnification per smear; this spreads every rendered smear over a range
    of scales as well, so organism sizes between and beyond the rendered ones are seen in training.
    """
    h, w = img.shape[:2]
    factor = max(math.exp(rng.uniform(-jitter, jitter)), least / min(h, w))
    nh, nw = max(least, round(h * factor)), max(least, round(w * factor))
    if (nh, nw) == (h, w):
        return img, boxes
    out = np.asarray(_pil_resize(img, nw, nh))
    scale = np.array([nw / w, nh / h, nw / w, nh / h], dtype=np.float32)
    return out, (boxes * scale).astype(np.float32)


def _random_crop(
    img: NDArray[np.uint8], boxes: NDArray[np.float32], labels: NDArray[np.int64], size: int, rng: np.random.Generator
) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.int64]]:
    """A size x size window; boxes cut by its edge are kept (clipped) when at least half is inside."""
    h, w = img.shape[:2]
    if size >= min(h, w):
        return img, boxes, labels
    y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    b = boxes - np.array([x0, y0, x0, y0], dtype=np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = np.clip(b, 0, size)
    inside = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    keep = inside >= 0.5 * np.maximum(area, 1e-6)
    return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size]), c[keep], labels[keep]


def _photometric(
    batch: NDArray[np.float32],
    rng: np.random.Generator,
    stain_jitter: float = 0.0,
    colour: str = "none",
    context: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Per-image stain and camera augmentation (NCHW float 0..255), then the model's colour convention.

    Stain jitter works in optical density (Beer-Lambert, as HED augmentation does): each image's
    absorbance vectors are mixed by a random near-identity 3x3 matrix and scaled per channel, which moves
    stain hue and strength together the way another stain batch or lamp would. Then gain, cast and
    contrast; last the same colour normalisation the runtime applies (`runtime.prepare`). `context`
    (NCHW, e.g. a thumbnail of the whole field a crop came from) gets the same jitter and supplies the
    contrast mean and white-balance reference, so a crop is normalised as the runtime normalises its field.
    """
    n = batch.shape[0]
    mix = np.eye(3, dtype=np.float32)[None] + rng.normal(0, stain_jitter, (n, 3, 3)).astype(np.float32)
    mix *= rng.uniform(0.75, 1.3, (n, 1, 1)).astype(np.float32)
    gain = (rng.uniform(0.85, 1.12, (n, 1, 1, 1)) * rng.uniform(0.93, 1.07, (n, 3, 1, 1))).astype(np.float32)
    contrast = rng.uniform(0.85, 1.15, (n, 1, 1, 1)).astype(np.float32)

    def jitter(x: NDArray[np.float32], mean: NDArray[np.float32] | None) -> tuple[NDArray[np.float32], Any]:
        if stain_jitter > 0:
            nn, _, hh, ww = x.shape
            od = np.matmul(mix, -np.log((x.reshape(nn, 3, -1) + 1.0) * (1 / 256.0)))
            x = (256.0 * np.exp(-np.clip(od, 0, 8)) - 1.0).reshape(nn, 3, hh, ww).astype(np.float32)
        m = x.mean(axis=(1, 2, 3), keepdims=True) if mean is None else mean
        return np.clip(((x - m) * contrast + m) * gain, 0, 255).astype(np.float32), m

    ctx = None
    mean = None
    if context is not None:
        ctx, mean = jitter(context, None)
    out, _ = jitter(batch, mean)
    if colour == "white-balance":
        ref = out[:, :, ::2, ::2] if ctx is None else ctx
        wb = white_balance_gain(np.ascontiguousarray(ref.transpose(0, 2, 3, 1)))
        out = np.clip(out * wb[:, :, None, None], 0, 255).astype(np.float32)
    return out


def detector_targets(
    boxes: NDArray[np.float32], labels: NDArray[np.int64], out_h: int, out_w: int
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Elliptical Gaussian centre heatmaps (TTFNet-style), regression targets and their mask."""
    heat = np.zeros((NUM_CLASSES, out_h, out_w), dtype=np.float32)
    reg = np.zeros((4, out_h, out_w), dtype=np.float32)
    mask = np.zeros((out_h, out_w), dtype=np.float32)
    ys = np.arange(out_h, dtype=np.float32)[:, None]
    xs = np.arange(out_w, dtype=np.float32)[None, :]
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))  # small ones win
    for i in order:
        x0, y0, x1, y1 = boxes[i] / STRIDE
        bw, bh = max(x1 - x0, 0.5), max(y1 - y0, 0.5)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(cx), out_w - 1), min(int(cy), out_h - 1)
        sx, sy = max(bw * 0.54 / 6, 0.6), max(bh * 0.54 / 6, 0.6)
        g = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
        c = int(labels[i])
        heat[c] = np.maximum(heat[c], g)
        reg[:, iy, ix] = (cx - ix, cy - iy, math.log(bw), math.log(bh))
        mask[iy, ix] = 1.0
    return heat, reg, mask


def tile_labels(
    boxes: NDArray[np.float32], labels: NDArray[np.int64], h: int, w: int, tile: int = TILE
) -> list[tuple[int, int, int]]:
    """(y, x, crop class) for each classifier tile of an image: the organism group covering it most."""
    out = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    groups = np.array([crop_class_of(int(lab)) for lab in labels], dtype=np.int64)
    bg = CROP_CLASSES.index("background")
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            iw = np.clip(np.minimum(boxes[:, 2], x + tile) - np.maximum(boxes[:, 0], x), 0, None)
            ih = np.clip(np.minimum(boxes[:, 3], y + tile) - np.maximum(boxes[:, 1], y), 0, None)
            inter = iw * ih
            ok = (groups != bg) & ((inter >= 0.4 * area) | (inter >= 0.12 * tile * tile))
            out.append((y, x, int(groups[ok][np.argmax(inter[ok])]) if ok.any() else bg))
    return out


def _focal(pred_logits: Any, target: Any) -> Any:
    import torch

    pred = torch.sigmoid(pred_logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred**2 * (1 - target) ** 4 * neg
    n = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def _lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 1e-5 + 0.5 * (base - 1e-5) * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _scheduled_lr(step: int, steps: int, base: float, t0: float, minutes: float, warmup: int = 100) -> float:
    """Cosine over steps, or over wall time when a time budget is set (whichever is further along)."""
    if minutes <= 0:
        return _lr_at(step, steps, base, warmup)
    frac = max(step / max(steps, 1), (time.time() - t0) / (minutes * 60))
    return _lr_at(int(frac * 10_000), 10_000, base, warmup=int(warmup * 10_000 / max(steps, 1)))


def train_detector(
    samples: list[Sample], cfg: TrainConfig, progress: Progress | None = None
) -> tuple[Any, list[float]]:
    """Train GramDetector; returns the model and the loss per step."""
    import torch

    from medcloud.vision.nets import GramDetector

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    model = GramDetector()
    if cfg.init and (Path(cfg.init) / "detector.pt").exists():
        model.load_state_dict(torch.load(Path(cfg.init) / "detector.pt", weights_only=True))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    losses: list[float] = []
    model.train()
    t0 = time.time()
    for step in range(cfg.det_steps):
        if cfg.det_minutes > 0 and time.time() - t0 > cfg.det_minutes * 60:
            break
        for group in opt.param_groups:
            group["lr"] = _scheduled_lr(step, cfg.det_steps, cfg.lr, t0, cfg.det_minutes)
        pick = rng.integers(0, len(samples), cfg.batch)
        imgs, thumbs, heats, regs, masks = [], [], [], [], []
        for j in pick:
            s = samples[int(j)]
            img, boxes = _augment(s.image, s.boxes, rng)
            thumbs.append(img[::4, ::4][:80, :80].transpose(2, 0, 1))
            if cfg.scale_jitter > 0:
                img, boxes = _zoom(img, boxes, cfg.scale_jitter, cfg.crop, rng)
            img, boxes, labels = _random_crop(img, boxes, s.labels, cfg.crop, rng)
            h, w = img.shape[:2]
            hm, rg, mk = detector_targets(boxes, labels, h // STRIDE, w // STRIDE)
            imgs.append(img.transpose(2, 0, 1))
            heats.append(hm)
            regs.append(rg)
            masks.append(mk)
        # Colour augmentation, then normalisation with the whole field as reference, as the runtime does.
        x = torch.from_numpy(
            _photometric(
                np.stack(imgs).astype(np.float32),
                rng,
                cfg.stain_jitter,
                cfg.colour,
                context=np.stack(thumbs).astype(np.float32),
            )
        )
        t_heat, t_reg, t_mask = (torch.from_numpy(np.stack(a)) for a in (heats, regs, masks))
        logits, reg = model(x)
        m = t_mask.unsqueeze(1)
        n = t_mask.sum().clamp(min=1)
        l_off = (torch.abs(reg[:, :2] - t_reg[:, :2]) * m).sum() / n
        l_size = (torch.abs(reg[:, 2:] - t_reg[:, 2:]) * m).sum() / n
        loss = _focal(logits, t_heat) + l_off + l_size
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        losses.append(float(loss.detach()))
        if progress and (step + 1) % 50 == 0:
            recent = sum(losses[-50:]) / 50
            progress(f"detector step {step + 1}/{cfg.det_steps} loss {recent:.3f} ({time.time() - t0:.0f}s)")
    model.eval()
    return model, losses


def classifier_tile_sides(jitter: float) -> list[int]:
    """Source-pixel sides of the classifier's training tiles: TILE alone, or five scales over exp(+-jitter)."""
    if jitter <= 0:
        return [TILE]
    sides = {max(16, round(TILE / math.exp(v))) for v in np.linspace(-jitter, jitter, 5)}
    return sorted(sides)


def _tile_at(image: NDArray[np.uint8], y: int, x: int, side: int) -> NDArray[np.uint8]:
    """The side x side region at (y, x), resized to the classifier's TILE when it is another size."""
    region = image[y : y + side, x : x + side]
    if side == TILE:
        return region
    return np.asarray(_pil_resize(np.ascontiguousarray(region), TILE, TILE))


def train_classifier(
    samples: list[Sample], cfg: TrainConfig, progress: Progress | None = None
) -> tuple[Any, list[float]]:
    """Train GramCropClassifier on grid tiles of the training smears; classes balanced by sampling."""
    import torch

    from medcloud.vision.nets import GramCropClassifier

    torch.manual_seed(cfg.seed + 2)
    rng = np.random.default_rng(cfg.seed + 3)
    sides = classifier_tile_sides(cfg.cls_scale_jitter)
    # index[class][scale] -> (sample, y, x): a scale is drawn first, so small tiles (many per image) do
    # not crowd out large ones
    index: list[list[list[tuple[int, int, int]]]] = [[[] for _ in sides] for _ in CROP_CLASSES]
    for i, s in enumerate(samples):
        h, w = s.image.shape[:2]
        for k, side in enumerate(sides):
            for y, x, c in tile_labels(s.boxes, s.labels, h, w, tile=side):
                index[c][k].append((i, y, x))
    model = GramCropClassifier()
    if cfg.init and (Path(cfg.init) / "classifier.pt").exists():
        model.load_state_dict(torch.load(Path(cfg.init) / "classifier.pt", weights_only=True))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    losses: list[float] = []
    model.train()
    per_class = max(1, cfg.cls_batch // len(CROP_CLASSES))
    t0 = time.time()
    for step in range(cfg.cls_steps):
        if cfg.cls_minutes > 0 and time.time() - t0 > cfg.cls_minutes * 60:
            break
        for group in opt.param_groups:
            group["lr"] = _scheduled_lr(step, cfg.cls_steps, cfg.lr, t0, cfg.cls_minutes, warmup=50)
        crops, thumbs, ys = [], [], []
        for c, by_scale in enumerate(index):
            filled = [k for k, items in enumerate(by_scale) if items]
            if not filled:
                continue
            if len(filled) == 1:  # one scale: the same draws as before the option existed
                draws = [(filled[0], int(j)) for j in rng.integers(0, len(by_scale[filled[0]]), per_class)]
            else:
                scales = [filled[int(j)] for j in rng.integers(0, len(filled), per_class)]
                draws = [(k, int(rng.integers(0, len(by_scale[k])))) for k in scales]
            for k, j in draws:
                i, y, x = by_scale[k][j]
                crop = _tile_at(samples[i].image, y, x, sides[k])
                if rng.uniform() < 0.5:
                    crop = crop[:, ::-1]
                if rng.uniform() < 0.5:
                    crop = crop.transpose(1, 0, 2)
                crops.append(crop.transpose(2, 0, 1))
                thumbs.append(samples[i].image[::4, ::4][:64, :64].transpose(2, 0, 1))
                ys.append(c)
        x_t = torch.from_numpy(
            _photometric(
                np.stack(crops).astype(np.float32),
                rng,
                cfg.stain_jitter,
                cfg.colour,
                context=np.stack(thumbs).astype(np.float32),
            )
        )
        y_t = torch.tensor(ys)
        loss = torch.nn.functional.cross_entropy(model(x_t), y_t)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(float(loss.detach()))
        if progress and (step + 1) % 50 == 0:
            progress(f"classifier step {step + 1}/{cfg.cls_steps} loss {sum(losses[-50:]) / 50:.3f}")
    model.eval()
    return model, losses


def export_onnx(detector: Any, classifier: Any | None, out_dir: Path) -> None:
    """Write detector.onnx (and classifier.onnx), opset 17, dynamic image size; check with onnx."""
    import warnings

    import onnx
    import torch

    from medcloud.vision.nets import ClassifierExport, DetectorExport

    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            DetectorExport(detector).eval(),
            (torch.zeros(1, 3, INPUT_LONG_SIDE, INPUT_LONG_SIDE),),
            str(out_dir / "detector.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["heat", "reg"],
            dynamic_axes={
                "image": {0: "n", 2: "h", 3: "w"},
                "heat": {0: "n", 2: "oh", 3: "ow"},
                "reg": {0: "n", 2: "oh", 3: "ow"},
            },
        )
        onnx.checker.check_model(onnx.load(str(out_dir / "detector.onnx")))
        if classifier is not None:
            torch.onnx.export(
                ClassifierExport(classifier).eval(),
                (torch.zeros(1, 3, TILE, TILE),),
                str(out_dir / "classifier.onnx"),
                dynamo=False,
                opset_version=17,
                input_names=["crops"],
                output_names=["probabilities"],
                dynamic_axes={"crops": {0: "n"}, "probabilities": {0: "n"}},
            )
            onnx.checker.check_model(onnx.load(str(out_dir / "classifier.onnx")))


def save_weights(detector: Any, classifier: Any | None, out_dir: Path) -> None:
    """Torch state dicts beside the ONNX files (for fine-tuning, and the torch cold-start comparison)."""
    import torch

    torch.save(detector.state_dict(), out_dir / "detector.pt")
    if classifier is not None:
        torch.save(classifier.state_dict(), out_dir / "classifier.pt")


def write_training_log(
    out_dir: Path, cfg: TrainConfig, det_losses: list[float], cls_losses: list[float], seconds: float
) -> dict[str, Any]:
    def curve(losses: list[float]) -> list[float]:
        k = max(1, len(losses) // 20)
        return [round(float(np.mean(losses[i : i + k])), 4) for i in range(0, len(losses), k)]

    log = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "detector_loss_curve": curve(det_losses),
        "classifier_loss_curve": curve(cls_losses),
        "seconds": round(seconds, 1),
    }
    (out_dir / "training_log.json").write_text(json.dumps(log, indent=2))
    return log


def resolve_init(init: str, name: str = "gram-stain") -> Path:
    """The model folder a run continues from: a folder holding detector.pt, or a shipped version's name.

    Anything else is refused before any work starts: a continuation that silently began from random
    weights would look like a run and waste its whole budget.
    """
    from medcloud.errors import InvalidInput, NotFound
    from medcloud.vision.registry import list_models, resolve

    folder = Path(init)
    if not folder.is_dir() and "/" not in init:
        with contextlib.suppress(NotFound):
            folder = resolve(None, name=name, version=init).path
    if folder.is_dir():
        if not (folder / "detector.pt").is_file():
            raise InvalidInput(f"--init {init}: that folder has no detector.pt to continue from")
        return folder
    versions = sorted(m.version for m in list_models(None) if m.name == name and (m.path / "detector.pt").is_file())
    raise InvalidInput(
        f"--init {init}: no such model folder, and no shipped {name} version of that name"
        f" (shipped: {', '.join(versions) or 'none'})"
    )


def train_model(
    cfg: TrainConfig, out_dir: Path, command: str, progress: Progress | None = None, cache: Path | None = None
) -> dict[str, Any]:
    """The whole recipe: render synthetic smears, train both nets, export ONNX, keep weights and the log."""
    import torch

    if cfg.init:
        cfg.init = str(resolve_init(cfg.init))
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = render_training_set(cfg, progress, cache)
    detector, det_losses = train_detector(samples, cfg, progress)
    classifier, cls_losses = train_classifier(samples, cfg, progress)
    export_onnx(detector, classifier, out_dir)
    save_weights(detector, classifier, out_dir)
    log = write_training_log(out_dir, cfg, det_losses, cls_losses, time.time() - t0)
    previous: list[Any] = []
    carried: dict[str, Any] = {}
    if cfg.init and (Path(cfg.init) / "training.json").exists():
        before = json.loads((Path(cfg.init) / "training.json").read_text())
        previous = [*before.get("previous", []), {k: v for k, v in before.items() if k != "previous"}]
        if not det_losses and before.get("inference"):
            # The detector is the init's, untouched: the inference recipe measured for it still holds.
            # A retrained detector starts single-scale again until its own recipe is chosen.
            carried = {
                "inference": before["inference"],
                "inference_chosen": "carried from the init: no detector step was run, its detector is unchanged",
            }
    training = {
        **carried,
        "command": command,
        "previous": previous,
        "synthetic": True,
        "sites": list(cfg.sites),
        "images": cfg.images,
        "detector_steps_run": len(det_losses),
        "classifier_steps_run": len(cls_losses),
        "seconds": log["seconds"],
        "torch": torch.__version__,
        "threads": cfg.threads,
        "boxes": cfg.boxes,
        "colour": cfg.colour,
        "random_share": cfg.random_share,
        "stain_jitter": cfg.stain_jitter,
        "scale_jitter": cfg.scale_jitter,
        "vector_share": cfg.vector_share,
        "textbook_share": cfg.textbook_share,
        "highmag_share": cfg.highmag_share,
        "cls_scale_jitter": cfg.cls_scale_jitter,
        "negative_share": cfg.negative_share,
        "seed": cfg.seed,
    }
    (out_dir / "training.json").write_text(json.dumps(training, indent=2))
    return training
