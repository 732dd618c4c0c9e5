"""A second SYNTHETIC smear renderer, written separately from `synth.py` and sharing no drawing code with it.

Cells are vector shapes (ellipses, capsules, lancets, kidney beans, clubs) drawn with PIL at twice the size and
reduced (anti-aliased), filled with a flat stain colour at a per-cell opacity, with a darker rim; layers are
composited by opacity, not by optical density (Beer-Lambert) as `synth.py` does. Sizes are set in micrometres
from textbook figures (red cell 7.5 um, staphylococcus 0.9 um, E. coli 0.7 x 2.5 um, Candida 3-5 um) and
converted with one pixels-per-micrometre factor, so red cells are about 7-8 cocci across, as under a real 100x
objective. Backgrounds: a tinted slide with low-frequency illumination, grain, faint pink protein strands.

Styles: `ood-1x` (a clean smear at the magnification where a coccus is about as many pixels as in `synth.py`'s
1x) and `ood-varied` (magnification 0.6-2x, defocus, pale or deep violet, bluish or orange counterstain,
crowding with bacteria on red cells, JPEG 40-90).

Annotation convention: one box per organism group (a cluster, a chain, a palisade, a pair of diplococci, a
yeast with its buds, one red cell), the union of its cells' extents.

It was written (session 13) as an evaluation-only check, `bench/vision_ood.py`: `gram-stain/0.6.0-synthetic`,
trained on `synth.py` alone, scored mAP50 0.42 / 0.21 on its two styles. Training may now mix it in
(`TrainConfig.vector_share`): renderer diversity, so that a model learns what a Gram stain looks like rather
than what one renderer draws. A model's `training.json` says whether it saw these smears; the held-out check
is then `bench/vision_blind.py`, written by another author who never saw either renderer.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from medcloud.vision.labels import LABEL_INDEX, LABELS

SUPER = 2  # drawing supersampling
RBC_UM = 7.5

# Stain colours (RGB of a fully stained, opaque cell) before the style's tone changes.
VIOLET = np.array([62, 28, 104], dtype=np.float32)
SAFRANIN = np.array([214, 72, 118], dtype=np.float32)
RBC_TONE = np.array([236, 158, 150], dtype=np.float32)
SLIDE = np.array([238, 234, 240], dtype=np.float32)


@dataclass
class Style:
    name: str
    px_per_um: float
    blur: float
    violet: NDArray[np.float32]
    safranin: NDArray[np.float32]
    slide: NDArray[np.float32]
    crowding: float
    jpeg: int | None
    light: float  # strength of uneven illumination
    noise: float


def draw_style(name: str, rng: np.random.Generator) -> Style:
    """Per-smear style. At px_per_um 9 a 0.9 um coccus is about 8 pixels of a 640 field (as in training)."""
    if name == "ood-1x":
        return Style(name, float(rng.uniform(8.5, 9.5)), float(rng.uniform(0.3, 0.8)), VIOLET.copy(),
                     SAFRANIN.copy(), SLIDE.copy(), float(rng.uniform(0, 0.3)), None, 0.15, 2.0)  # fmt: skip
    if name != "ood-varied":
        raise ValueError(f"unknown style {name!r}")
    mag = float(math.exp(rng.uniform(math.log(0.6), math.log(2.0))))
    pale = float(rng.uniform(0.0, 1.0))
    violet = VIOLET + pale * (np.array([150, 140, 190], dtype=np.float32) - VIOLET) * rng.uniform(0.3, 0.9)
    violet = violet + np.array([-10, 0, 25], dtype=np.float32) * rng.uniform(-0.5, 1.5)  # bluer or redder
    saf_shift = rng.uniform(-1, 1)
    safranin = SAFRANIN + np.array([10, 30, -40], dtype=np.float32) * saf_shift  # orange .. magenta
    safranin = safranin + (SLIDE - safranin) * rng.uniform(0.0, 0.45)  # pale counterstain
    slide = SLIDE + rng.normal(0, 6, 3).astype(np.float32)
    return Style(
        name,
        9.0 * mag,
        float(rng.uniform(0.2, 2.2)),
        np.clip(violet, 0, 255).astype(np.float32),
        np.clip(safranin, 0, 255).astype(np.float32),
        np.clip(slide, 180, 255).astype(np.float32),
        float(rng.uniform(0, 1)),
        int(rng.integers(40, 91)) if rng.uniform() < 0.6 else None,
        float(rng.uniform(0.1, 0.5)),
        float(rng.uniform(1.0, 6.0)),
    )


# ---- shapes: each returns polygons (lists of (x, y) in micrometres around the group's origin) ----

Poly = list[tuple[float, float]]


def _ellipse(cx: float, cy: float, a: float, b: float, angle: float, n: int = 20) -> Poly:
    ca, sa = math.cos(angle), math.sin(angle)
    out = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x, y = a * math.cos(t), b * math.sin(t)
        out.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    return out


def _capsule(cx: float, cy: float, length: float, width: float, angle: float, club: float = 0.0) -> Poly:
    """A rod with rounded ends; `club` > 0 swells one end (Corynebacterium)."""
    ca, sa = math.cos(angle), math.sin(angle)
    half = max(length - width, 0.0) / 2
    r0, r1 = width / 2, width / 2 * (1 + club)
    pts: Poly = []
    for k in range(9):  # one cap
        t = -math.pi / 2 + math.pi * k / 8
        pts.append((half + r1 * math.cos(t), r1 * math.sin(t)))
    for k in range(9):  # the other
        t = math.pi / 2 + math.pi * k / 8
        pts.append((-half + r0 * math.cos(t), r0 * math.sin(t)))
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in pts]


def _lancet(cx: float, cy: float, length: float, width: float, angle: float) -> Poly:
    """A pointed oval (the lancet of a pneumococcus half-pair)."""
    ca, sa = math.cos(angle), math.sin(angle)
    pts = []
    for k in range(20):
        t = 2 * math.pi * k / 20
        x = length / 2 * math.cos(t)
        y = width / 2 * math.sin(t) * (1 - 0.45 * max(0.0, math.cos(t)))  # narrower towards one end
        pts.append((x, y))
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in pts]


def _bean(cx: float, cy: float, size: float, angle: float) -> Poly:
    """A kidney bean whose flat side faces +x of `angle` (a half of a Neisseria pair)."""
    ca, sa = math.cos(angle), math.sin(angle)
    pts = []
    for k in range(24):
        t = 2 * math.pi * k / 24
        x, y = size * 0.42 * math.cos(t), size * 0.55 * math.sin(t)
        if x > 0:
            x *= 0.35  # flattened facing side
        pts.append((x, y))
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in pts]


@dataclass
class Cell:
    poly: Poly
    stain: str  # "violet" | "safranin" | "rbc"
    opacity: float
    pallor: bool = False


def _chain(rng: np.random.Generator, n: int, step: float, wander: float) -> list[tuple[float, float, float]]:
    x = y = 0.0
    a = rng.uniform(0, 2 * math.pi)
    out = []
    for _ in range(n):
        out.append((x, y, a))
        a += rng.normal(0, wander)
        x, y = x + step * math.cos(a), y + step * math.sin(a)
    return out


def _pack(rng: np.random.Generator, n: int, d: float) -> list[tuple[float, float]]:
    """Cocci packed into an irregular clump: each new one touches one placed before."""
    pts = [(0.0, 0.0)]
    while len(pts) < n:
        bx, by = pts[int(rng.integers(len(pts)))]
        a = rng.uniform(0, 2 * math.pi)
        p = (bx + d * 0.95 * math.cos(a), by + d * 0.95 * math.sin(a))
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 > (d * 0.8) ** 2 for q in pts):
            pts.append(p)
    return pts


def organism(code: str, rng: np.random.Generator) -> list[Cell]:
    """One group of `code`, sizes in micrometres (textbook figures), around (0, 0)."""
    op = float(rng.uniform(0.75, 0.95))
    cells: list[Cell] = []
    if code in ("s_aureus", "cns"):
        d = rng.uniform(0.85, 1.0) if code == "s_aureus" else rng.uniform(0.75, 0.9)
        n = int(rng.integers(8, 30)) if code == "s_aureus" else int(rng.integers(4, 12))
        for x, y in _pack(rng, n, d):
            cells.append(Cell(_ellipse(x, y, d / 2, d / 2 * rng.uniform(0.92, 1.0), rng.uniform(0, 3)), "violet", op))
    elif code in ("streptococcus", "s_pyogenes", "gbs", "enterococcus"):
        lo, hi = {"streptococcus": (5, 14), "s_pyogenes": (8, 22), "gbs": (3, 8), "enterococcus": (2, 5)}[code]
        d = rng.uniform(0.7, 0.9)
        elong = 1.25 if code == "enterococcus" else 1.05
        for x, y, a in _chain(rng, int(rng.integers(lo, hi)), d * elong * 1.02, 0.18):
            cells.append(Cell(_ellipse(x, y, d * elong / 2, d / 2, a), "violet", op))
    elif code == "s_pneumoniae":
        a = rng.uniform(0, 2 * math.pi)
        for k in range(int(rng.choice([1, 1, 2]))):  # one pair, sometimes a short chain of two
            base = k * 2.3
            for s in (-1, 1):
                cx = (base + s * 0.55) * math.cos(a)
                cy = (base + s * 0.55) * math.sin(a)
                cells.append(Cell(_lancet(cx, cy, 1.1, 0.75, a + (0 if s > 0 else math.pi)), "violet", op))
    elif code == "bacillus":
        w = rng.uniform(0.9, 1.2)
        for x, y, a in _chain(rng, int(rng.integers(2, 5)), 4.6, 0.08):
            cells.append(Cell(_capsule(x, y, rng.uniform(3.8, 5.0), w, a), "violet", op))
    elif code == "corynebacterium":
        base = rng.uniform(0, math.pi)
        for k in range(int(rng.integers(3, 8))):  # palisade with a few V-angles
            a = base + (rng.choice([0.0, 0.0, 0.6, -0.6]))
            cells.append(Cell(_capsule(k * 0.75, rng.normal(0, 0.25), rng.uniform(1.8, 3.0), 0.55, a + math.pi / 2,
                                       club=0.5), "violet", op))  # fmt: skip
    elif code == "listeria":
        for x, y, a in _chain(rng, int(rng.choice([1, 2, 2, 3])), 1.6, 0.9):
            cells.append(Cell(_capsule(x, y, rng.uniform(1.0, 1.8), 0.55, a), "violet", op))
    elif code in ("enterobacterales", "p_aeruginosa", "pseudomonas_other"):
        w = {"enterobacterales": 0.75, "p_aeruginosa": 0.55, "pseudomonas_other": 0.6}[code]
        length = {"enterobacterales": (1.8, 3.0), "p_aeruginosa": (2.0, 3.6), "pseudomonas_other": (1.5, 2.6)}[code]
        for _ in range(int(rng.integers(1, 4))):
            cells.append(Cell(_capsule(rng.normal(0, 1.2), rng.normal(0, 1.2), rng.uniform(*length), w,
                                       rng.uniform(0, 2 * math.pi)), "safranin", op * 0.9))  # fmt: skip
    elif code == "haemophilus":
        for _ in range(int(rng.integers(4, 12))):
            cells.append(Cell(_capsule(rng.normal(0, 1.3), rng.normal(0, 1.3), rng.uniform(0.5, 1.2), 0.45,
                                       rng.uniform(0, 2 * math.pi)), "safranin", op * 0.8))  # fmt: skip
    elif code == "gn_cocci":
        a = rng.uniform(0, 2 * math.pi)
        size = rng.uniform(0.8, 1.0)
        for s in (-1, 1):
            cells.append(Cell(_bean(s * size * 0.3 * math.cos(a), s * size * 0.3 * math.sin(a), size,
                                    a + (math.pi if s > 0 else 0.0)), "safranin", op))  # fmt: skip
    elif code == "candida":
        a = rng.uniform(0, 2 * math.pi)
        la, lb = rng.uniform(2.0, 2.8), rng.uniform(1.5, 2.0)
        cells.append(Cell(_ellipse(0, 0, la, lb, a), "violet", min(1.0, op + 0.05)))
        for k in range(int(rng.choice([0, 1, 1, 2]))):  # buds
            b = a + (0 if k == 0 else math.pi) + rng.normal(0, 0.3)
            r = rng.uniform(0.8, 1.3)
            cells.append(Cell(_ellipse((la + r * 0.8) * math.cos(b), (la + r * 0.8) * math.sin(b), r, r * 0.85, b),
                              "violet", op))  # fmt: skip
    elif code == "rbc":
        r = RBC_UM / 2 * rng.uniform(0.92, 1.08)
        cells.append(Cell(_ellipse(0, 0, r, r * rng.uniform(0.9, 1.0), rng.uniform(0, 3)), "rbc",
                          float(rng.uniform(0.45, 0.7)), pallor=True))  # fmt: skip
    else:
        raise ValueError(f"unknown organism {code!r}")
    return cells


ORGANISMS = tuple(label.code for label in LABELS if label.code != "rbc")


@dataclass
class OodSmear:
    image: NDArray[np.uint8]
    boxes: NDArray[np.float32]
    labels: NDArray[np.int64]
    style: Style


def _background(rng: np.random.Generator, style: Style, size: int) -> NDArray[np.float32]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    light = np.ones((size, size), dtype=np.float32)
    for _ in range(3):  # soft lamp spots and fall-off
        cx, cy, s = rng.uniform(-0.2, 1.2), rng.uniform(-0.2, 1.2), rng.uniform(0.3, 0.8)
        light += style.light * rng.uniform(-0.5, 0.5) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    img = style.slide[None, None, :] * light[..., None]
    haze = Image.new("L", (size, size), 0)  # counterstain haze and protein strands
    d = ImageDraw.Draw(haze)
    for _ in range(int(rng.integers(2, 8))):
        pts = [(float(rng.uniform(0, size)), float(rng.uniform(0, size)))]
        for _ in range(int(rng.integers(3, 7))):
            x, y = pts[-1]
            pts.append((x + float(rng.normal(0, size * 0.12)), y + float(rng.normal(0, size * 0.12))))
        d.line(pts, fill=int(rng.integers(20, 60)), width=int(rng.integers(2, 9)), joint="curve")
    hz = np.asarray(haze.filter(ImageFilter.GaussianBlur(3)), dtype=np.float32)[..., None] / 255.0
    img = img * (1 - hz * 0.35) + style.safranin[None, None, :] * hz * 0.35
    return img


def render(seed: int, style_name: str, size: int = 640, species: list[str] | None = None) -> OodSmear:
    """One SYNTHETIC smear from this renderer (see the module text)."""
    rng = np.random.default_rng(seed)
    style = draw_style(style_name, rng)
    ppu = style.px_per_um
    field_um = size / ppu
    area = (field_um / 71.0) ** 2  # a field 71 um wide is "1x" (640 px at 9 px/um)
    if species is None:
        n = max(1, int(rng.integers(5, 14) * area))
        codes = [ORGANISMS[int(k)] for k in rng.integers(0, len(ORGANISMS), n)]
        if rng.uniform() < 0.5:  # most smears are dominated by one or two organisms
            main = ORGANISMS[int(rng.integers(len(ORGANISMS)))]
            codes = [main if rng.uniform() < 0.7 else c for c in codes]
    else:
        codes = list(species)
    n_rbc = int((rng.integers(0, 6) + style.crowding * rng.integers(10, 45)) * area)
    plan = ["rbc"] * n_rbc + codes
    big = size * SUPER
    layers = {k: Image.new("L", (big, big), 0) for k in ("violet", "safranin", "rbc", "rim", "pallor")}
    draws = {k: ImageDraw.Draw(v) for k, v in layers.items()}
    boxes: list[list[float]] = []
    labels: list[int] = []
    rbc_centres: list[tuple[float, float]] = []
    for code in plan:
        cells = organism(code, rng)
        if code != "rbc" and rbc_centres and rng.uniform() < 0.5 * style.crowding:  # on a red cell
            ax, ay = rbc_centres[int(rng.integers(len(rbc_centres)))]
            ox, oy = ax + rng.normal(0, RBC_UM * 0.25 * ppu), ay + rng.normal(0, RBC_UM * 0.25 * ppu)
        else:
            ox, oy = rng.uniform(0.03, 0.97) * size, rng.uniform(0.03, 0.97) * size
        rot = rng.uniform(0, 2 * math.pi)
        cr, sr = math.cos(rot), math.sin(rot)
        xs: list[float] = []
        ys: list[float] = []
        for cell in cells:
            pts = [(ox + (x * cr - y * sr) * ppu, oy + (x * sr + y * cr) * ppu) for x, y in cell.poly]
            xs += [p[0] for p in pts]
            ys += [p[1] for p in pts]
            spts = [(x * SUPER, y * SUPER) for x, y in pts]
            draws[cell.stain].polygon(spts, fill=int(255 * cell.opacity))
            if cell.stain != "rbc":
                draws["rim"].line([*spts, spts[0]], fill=int(255 * cell.opacity), width=max(1, round(SUPER * 0.6)))
            if cell.pallor:
                inner = [(ox + (x * 0.45) * ppu, oy + (y * 0.45) * ppu) for x, y in cell.poly]
                draws["pallor"].polygon([(x * SUPER, y * SUPER) for x, y in inner], fill=160)
        x0, y0, x1, y1 = max(min(xs), 0), max(min(ys), 0), min(max(xs), size), min(max(ys), size)
        if x1 - x0 < 2 or y1 - y0 < 2 or (x1 - x0) * (y1 - y0) < 0.4 * (max(xs) - min(xs)) * (max(ys) - min(ys)):
            continue  # mostly outside the field: drawn, not labelled (as a cut-off group at an edge)
        boxes.append([x0, y0, x1, y1])
        labels.append(LABEL_INDEX[code])
        if code == "rbc":
            rbc_centres.append((ox, oy))
    img = _background(rng, style, size)

    def alpha(name: str, blur: float) -> NDArray[np.float32]:
        layer = layers[name].resize((size, size), Image.Resampling.LANCZOS)
        if blur > 0:
            layer = layer.filter(ImageFilter.GaussianBlur(blur))
        return np.asarray(layer, dtype=np.float32)[..., None] / 255.0

    rbc_a = alpha("rbc", style.blur) * (1 - 0.5 * alpha("pallor", style.blur + 1.0))
    img = img * (1 - rbc_a) + RBC_TONE * rbc_a
    for stain, colour in (("safranin", style.safranin), ("violet", style.violet)):
        a = alpha(stain, style.blur)
        img = img * (1 - a) + colour * a
    rim = alpha("rim", style.blur) * 0.35
    img = img * (1 - rim)  # a darker, refractile edge
    img += rng.normal(0, style.noise, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if style.jpeg is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=style.jpeg)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return OodSmear(out, np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64), style)


STYLES = ("ood-1x", "ood-varied")
