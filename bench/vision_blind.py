"""A blind, independent Gram-stain smear renderer: SYNTHETIC images for evaluation only.

This module was written without seeing the project's own smear generators or their training code; it
encodes only a general understanding of what Gram-stained blood-culture and sputum smears look like under
a 100x oil objective, photographed with a microscope camera or a phone held to the eyepiece. It exists so
that the detector can be checked against a renderer that shares none of its generator's assumptions. Never
train on it.

Rendering is physically motivated. Every cell is a 2-D shape (stadium, boxcar, ellipse, tapered/lancet or
flattened "kidney" variants) described by a signed distance; its projected thickness (sqrt-profile of a
solid of revolution) times a per-cell dye load gives optical-density maps for crystal violet, safranin,
haemoglobin, background protein and opaque debris. Beer-Lambert absorption with per-dye RGB spectra turns
them into transmitted light under an uneven, tinted illuminant; the optics add defocus (per group and over
the field), and the camera adds shot/read noise, a tone curve, sharpening and JPEG.

Scale: at magnification 1.0 a 640-px image spans about 91 um (7 px/um), so a staphylococcus is ~7 px across
and a red cell ~52 px. Sizes scale with `size`/640 and with the style's magnification.

Styles:
- ``blind-clean``: a good microscope camera, magnification 0.9-1.15, sharp focus, even light, textbook
  staining, mild noise, high JPEG quality, moderate crowding, little debris.
- ``blind-field``: a busy laboratory: magnification 0.6-2.0, variable and uneven focus (field curvature),
  weak or strong stain, hue drift, over- or under-decolourisation, uneven and tinted illumination, more
  noise, JPEG 55-92, sparse to crowded fields, stain precipitate, charcoal, neutrophils and mucus strands.
- ``blind-phone``: a phone held to the eyepiece: magnification 1.0-2.0, a circular field stop with dark
  surround, auto-white-balance casts, punchy tone curve and over-sharpening, chroma noise, lateral chromatic
  aberration, occasional motion blur and heavy JPEG.

Annotation: one box per organism group (a staphylococcal cluster, a chain, a palisade, a diplococcal pair,
a few rods lying together, a yeast with its buds, a single red cell), the box spanning the group's cells.
Groups cut by the image edge (or the phone's field stop) are labelled only when mostly visible. Neutrophils,
precipitate, charcoal and granules are drawn but never labelled.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from medcloud.vision.labels import LABEL_CODES, LABEL_INDEX

STYLES: tuple[str, ...] = ("blind-clean", "blind-field", "blind-phone")

BASE_PX_PER_UM = 7.0  # at magnification 1.0 and size 640

ORGANISMS: tuple[str, ...] = tuple(c for c in LABEL_CODES if c != "rbc")

# Rough prevalence among positive blood cultures / sputum smears, used (flattened) to draw random fields.
_PREVALENCE: dict[str, float] = {
    "enterobacterales": 0.16,
    "p_aeruginosa": 0.05,
    "enterococcus": 0.07,
    "cns": 0.14,
    "bacillus": 0.04,
    "s_aureus": 0.12,
    "gbs": 0.04,
    "streptococcus": 0.06,
    "haemophilus": 0.03,
    "s_pneumoniae": 0.05,
    "s_pyogenes": 0.04,
    "listeria": 0.03,
    "pseudomonas_other": 0.02,
    "corynebacterium": 0.04,
    "gn_cocci": 0.03,
    "candida": 0.05,
}

# Groups per 91-um field at magnification 1 when the organism dominates the smear.
_DENSITY: dict[str, tuple[float, float]] = {
    "enterobacterales": (25, 80),
    "p_aeruginosa": (25, 80),
    "pseudomonas_other": (20, 70),
    "haemophilus": (15, 40),
    "enterococcus": (20, 60),
    "cns": (15, 45),
    "s_aureus": (12, 40),
    "streptococcus": (8, 25),
    "gbs": (10, 30),
    "s_pyogenes": (6, 18),
    "s_pneumoniae": (15, 45),
    "gn_cocci": (20, 60),
    "listeria": (20, 50),
    "corynebacterium": (10, 30),
    "bacillus": (6, 18),
    "candida": (4, 14),
}

_GRAM: dict[str, str] = {
    "enterobacterales": "gn",
    "p_aeruginosa": "gn",
    "pseudomonas_other": "gn",
    "haemophilus": "gn",
    "gn_cocci": "gn",
    "enterococcus": "gp",
    "cns": "gp",
    "s_aureus": "gp",
    "streptococcus": "gp",
    "gbs": "gp",
    "s_pyogenes": "gp",
    "s_pneumoniae": "gp",
    "listeria": "gp",
    "corynebacterium": "gp",
    "bacillus": "gp",
    "candida": "gp",
    "rbc": "rbc",
}

# Cell record layout (one row per cell; lengths in um while building a group, pixels once placed).
_X, _Y, _ANG, _L, _W, _RC, _TAPER, _CUT, _SPORE, _SPOS, _BAMP, _BFREQ, _BPH, _BASE, _PALLOR = range(15)
_CV, _SF, _HB, _BG, _DK, _SOFT, _INBOX = range(15, 22)
_NF = 22
_DYES = (_CV, _SF, _HB, _BG, _DK)
_NO_CUT = 1e4

# Absorbance spectra (R, G, B) per unit optical density.
_A_CV = np.array([0.95, 1.30, 0.50], np.float32)  # crystal violet: absorbs orange-green, passes blue-violet
_A_SF = np.array([0.12, 0.95, 0.58], np.float32)  # safranin: absorbs green/blue, passes red
_A_HB = np.array([0.05, 0.42, 0.55], np.float32)  # haemoglobin + counterstain: pale pink-orange
_A_DK = np.array([1.00, 1.04, 1.10], np.float32)  # charcoal, opaque debris

_BUCKETS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
_PAD = 256


@dataclass
class BlindSmear:
    """One rendered smear: the RGB photograph, one box per organism group and its label index."""

    image: np.ndarray  # uint8 (size, size, 3)
    boxes: np.ndarray  # float32 (N, 4) x0, y0, x1, y1 in pixels
    labels: np.ndarray  # int64 (N,) indices into LABELS
    style: dict[str, object] = field(default_factory=dict)


def _cell(
    x: float,
    y: float,
    ang: float,
    half_len: float,
    half_wid: float,
    *,
    rc: float | None = None,
    ell: bool = False,
    taper: float = 0.0,
    cut: float = _NO_CUT,
    spore: float = 0.0,
    spore_pos: float = 0.0,
    bead: tuple[float, float, float] = (0.0, 0.0, 0.0),
    base: float = 0.45,
    pallor: float = 0.0,
    inbox: bool = True,
) -> list[float]:
    """One cell: centre, axis angle, half-length along the axis, half-width; rc < 0 marks an ellipse."""
    r = -1.0 if ell else (half_wid if rc is None else min(rc, half_wid, half_len))
    row = [0.0] * _NF
    row[_X], row[_Y], row[_ANG], row[_L], row[_W], row[_RC] = x, y, ang, max(half_len, half_wid * 0.5), half_wid, r
    row[_TAPER], row[_CUT], row[_SPORE], row[_SPOS] = taper, cut, spore, spore_pos
    row[_BAMP], row[_BFREQ], row[_BPH] = bead
    row[_BASE], row[_PALLOR], row[_INBOX] = base, pallor, 1.0 if inbox else 0.0
    return row


# ---------------------------------------------------------------- arrangements (all lengths in um)


def _pack_cluster(rng: np.random.Generator, n: int, d: float) -> list[tuple[float, float]]:
    """Grape-like cluster: each new coccus touches a random earlier one, slight overlap allowed (3-D stacking)."""
    pts = [(0.0, 0.0)]
    tries = 0
    while len(pts) < n and tries < n * 40:
        tries += 1
        bx, by = pts[int(rng.integers(len(pts)))]
        a = rng.uniform(0, 2 * math.pi)
        r = d * rng.uniform(0.82, 1.0)
        px, py = bx + r * math.cos(a), by + r * math.sin(a)
        if all((px - qx) ** 2 + (py - qy) ** 2 > (0.74 * d) ** 2 for qx, qy in pts):
            pts.append((px, py))
    return pts


def _chain_path(
    rng: np.random.Generator, n: int, step: float, wiggle: float, paired: bool
) -> list[tuple[float, float, float]]:
    """Cocci along a gently wandering path; with `paired`, cells sit closer within each dividing pair."""
    out = [(0.0, 0.0, 0.0)]
    ang = 0.0
    x = y = 0.0
    for i in range(1, n):
        ang += rng.normal(0, wiggle)
        st = step * (0.9 if (paired and i % 2 == 1) else 1.08) * rng.uniform(0.95, 1.05)
        x += st * math.cos(ang)
        y += st * math.sin(ang)
        out.append((x, y, ang))
    return out


def _centre(cells: list[list[float]]) -> list[list[float]]:
    mx = sum(c[_X] for c in cells) / len(cells)
    my = sum(c[_Y] for c in cells) / len(cells)
    for c in cells:
        c[_X] -= mx
        c[_Y] -= my
    return cells


def _staph(rng: np.random.Generator, aureus: bool) -> list[list[float]]:
    d = rng.uniform(0.9, 1.15) if aureus else rng.uniform(0.8, 1.0)
    u = rng.random()
    if aureus:
        n = int(min(4 + rng.geometric(0.09), 40)) if u < 0.82 else (2 if u < 0.92 else 4)
    else:
        n = int(min(3 + rng.geometric(0.16), 22)) if u < 0.6 else int(rng.choice([1, 2, 2, 4]))
    if n == 4 and u >= 0.6 and rng.random() < 0.6:  # tetrad
        pts = [(0.0, 0.0), (d * 0.95, 0.0), (0.0, d * 0.95), (d * 0.95, d * 0.95)]
    elif n == 2:
        pts = [(0.0, 0.0), (d * 0.93, 0.0)]
    else:
        pts = _pack_cluster(rng, n, d)
    return _centre([_cell(x, y, rng.uniform(0, math.pi), d / 2 * rng.uniform(1.0, 1.06), d / 2) for x, y in pts])


def _strep_chain(rng: np.random.Generator, code: str) -> list[list[float]]:
    if code == "enterococcus":
        d, oval, paired, wig = rng.uniform(0.85, 1.05), rng.uniform(1.15, 1.35), True, 0.25
        n = 2 if rng.random() < 0.55 else int(rng.integers(3, 7))
    elif code == "gbs":
        d, oval, paired, wig = rng.uniform(0.85, 1.05), rng.uniform(1.05, 1.2), True, 0.3
        n = int(rng.integers(2, 9))
    elif code == "s_pyogenes":
        d, oval, paired, wig = rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.08), False, 0.22
        n = int(rng.integers(6, 31))
    else:  # viridans-type streptococcus
        d, oval, paired, wig = rng.uniform(0.75, 0.95), rng.uniform(1.0, 1.12), rng.random() < 0.4, 0.28
        n = int(rng.integers(4, 15))
    w = d / 2 / math.sqrt(oval)
    half_len = d / 2 * math.sqrt(oval)
    path = _chain_path(rng, n, 2 * half_len, wig, paired)
    return _centre([_cell(x, y, a, half_len, w, ell=True, base=0.5) for x, y, a in path])


def _pneumo(rng: np.random.Generator) -> list[list[float]]:
    """Lancet diplococci: two ovoid cells, flat-ish facing ends, pointed distal ends; sometimes a short chain."""
    pairs = 1 if rng.random() < 0.8 else int(rng.integers(2, 4))
    half_len, w = rng.uniform(0.55, 0.72), rng.uniform(0.36, 0.45)
    taper = -rng.uniform(0.35, 0.55)
    cells: list[list[float]] = []
    ang = 0.0
    cx = cy = 0.0
    for _ in range(pairs):
        for side in (-1.0, 1.0):
            x = cx + side * (half_len + 0.04) * math.cos(ang)
            y = cy + side * (half_len + 0.04) * math.sin(ang)
            a = ang + (0.0 if side > 0 else math.pi)
            cells.append(_cell(x, y, a, half_len, w, ell=True, taper=taper, base=0.5))
        step = 4 * half_len * 1.08
        ang += rng.normal(0, 0.25)
        cx += step * math.cos(ang)
        cy += step * math.sin(ang)
    cells = _centre(cells)
    if rng.random() < 0.55:  # capsule: a clear halo in the proteinaceous background
        span = max(abs(c[_X]) for c in cells) + half_len, max(abs(c[_Y]) for c in cells) + w
        a0 = math.atan2(cells[-1][_Y] - cells[0][_Y], cells[-1][_X] - cells[0][_X])
        halo = _cell(0, 0, a0, math.hypot(*span) + 0.45, w + 0.55, ell=True, base=1.0, inbox=False)
        halo[_BG] = -1.0
        cells.append(halo)
    return cells


def _gn_diplo(rng: np.random.Generator) -> list[list[float]]:
    """Kidney-bean diplococci: two cells flattened where they face each other, a thin gap between."""
    r = rng.uniform(0.38, 0.5)
    half_len, w = r * 0.82, r * 1.05
    gap = rng.uniform(0.06, 0.16)
    off = half_len * 0.55 + gap / 2
    cells = [
        _cell(off, 0.0, math.pi, half_len, w, ell=True, cut=half_len * 0.55 - 0.0, base=0.5),
        _cell(-off, 0.0, 0.0, half_len, w, ell=True, cut=half_len * 0.55, base=0.5),
    ]
    return cells


def _rod_group(rng: np.random.Generator, n: int, make, spread: float, end_to_end: float) -> list[list[float]]:
    """A few rods lying together: end-to-end (dividing) or loosely side by side within `spread` um."""
    first = make(0.0, 0.0, 0.0)
    cells = [first]
    while len(cells) < n:
        prev = cells[-1]
        if rng.random() < end_to_end:
            a = prev[_ANG] + rng.normal(0, 0.18)
            nxt = make(0.0, 0.0, a)
            dist = prev[_L] + nxt[_L] + rng.uniform(0.02, 0.15)
            ma = (prev[_ANG] + a) / 2
            nxt[_X], nxt[_Y] = prev[_X] + dist * math.cos(ma), prev[_Y] + dist * math.sin(ma)
        else:
            for _ in range(12):
                nxt = make(rng.uniform(-spread, spread), rng.uniform(-spread, spread), rng.uniform(0, math.pi))
                if all(math.hypot(nxt[_X] - c[_X], nxt[_Y] - c[_Y]) > c[_W] + nxt[_W] + 0.15 for c in cells):
                    break
        cells.append(nxt)
    return _centre(cells)


def _n_from(rng: np.random.Generator, probs: dict[int, float]) -> int:
    keys = list(probs)
    p = np.array([probs[k] for k in keys], float)
    return int(keys[int(rng.choice(len(keys), p=p / p.sum()))])


def _enterobacterales(rng: np.random.Generator) -> list[list[float]]:
    bip = rng.random() < 0.3

    def make(x: float, y: float, a: float) -> list[float]:
        w, hl = rng.uniform(0.3, 0.4), rng.uniform(0.75, 1.5)
        bead = (rng.uniform(0.2, 0.4), math.pi / hl, math.pi) if bip else (0.0, 0.0, 0.0)
        return _cell(x, y, a, hl, w, rc=w * rng.uniform(0.75, 1.0), bead=bead, base=0.55)

    return _rod_group(rng, _n_from(rng, {1: 0.6, 2: 0.28, 3: 0.08, 4: 0.04}), make, 1.6, 0.5)


def _pseudomonas(rng: np.random.Generator, aeruginosa: bool) -> list[list[float]]:
    def make(x: float, y: float, a: float) -> list[float]:
        if aeruginosa:
            w, hl = rng.uniform(0.24, 0.3), rng.uniform(0.75, 1.5)
        else:
            w, hl = rng.uniform(0.28, 0.36), rng.uniform(0.6, 1.2)
        return _cell(x, y, a, hl, w, base=0.5)

    return _rod_group(rng, _n_from(rng, {1: 0.55, 2: 0.33, 3: 0.12}), make, 1.5, 0.6)


def _haemophilus(rng: np.random.Generator) -> list[list[float]]:
    def make(x: float, y: float, a: float) -> list[float]:
        w = rng.uniform(0.17, 0.24)
        hl = rng.uniform(0.2, 0.55) if rng.random() < 0.93 else rng.uniform(0.8, 2.0)
        return _cell(x, y, a, hl, w, base=0.6)

    n = int(rng.integers(3, 13))
    return _rod_group(rng, n, make, rng.uniform(1.2, 2.6), 0.12)


def _listeria(rng: np.random.Generator) -> list[list[float]]:
    w = rng.uniform(0.25, 0.32)

    def rod(x: float, y: float, a: float) -> list[float]:
        return _cell(x, y, a, rng.uniform(0.45, 0.95), w, base=0.5)

    u = rng.random()
    if u < 0.4:
        return [rod(0, 0, 0)]
    if u < 0.7:  # V: two rods joined at one end
        a = rng.uniform(0.35, 1.05)
        c1, c2 = rod(0, 0, 0), rod(0, 0, a)
        c1[_X] = c1[_L]
        c2[_X], c2[_Y] = c2[_L] * math.cos(a), c2[_L] * math.sin(a)
        return _centre([c1, c2])
    return _rod_group(rng, int(rng.integers(3, 5)), rod, 0.9, 0.55)


def _coryne(rng: np.random.Generator) -> list[list[float]]:
    """Club-shaped, beaded rods in palisades or angular 'Chinese letter' arrangements."""

    def rod(x: float, y: float, a: float) -> list[float]:
        hl = rng.uniform(0.7, 1.6)
        period = rng.uniform(0.8, 1.3)  # metachromatic granules: a few darker beads per rod
        bead = (rng.uniform(0.1, 0.25), 2 * math.pi / period, rng.uniform(0, 2 * math.pi))
        taper = rng.uniform(0.15, 0.4) * (1 if rng.random() < 0.5 else -1)
        return _cell(x, y, a, hl, rng.uniform(0.24, 0.34), taper=taper, bead=bead, base=0.5)

    cells = []
    if rng.random() < 0.5:  # palisade
        n = int(rng.integers(3, 8))
        for i in range(n):
            cells.append(rod(rng.normal(0, 0.35), i * rng.uniform(0.7, 0.95), rng.normal(0, 0.12)))
    else:  # Chinese letters: each rod hinged at an end of the previous one
        n = int(rng.integers(2, 6))
        x = y = a = 0.0
        prev_l = 0.0
        for _ in range(n):
            c = rod(0, 0, 0)
            a_new = a + rng.choice([-1, 1]) * rng.uniform(0.35, 1.5)
            ex, ey = x + prev_l * math.cos(a), y + prev_l * math.sin(a)
            c[_ANG] = a_new
            c[_X], c[_Y] = ex + c[_L] * math.cos(a_new), ey + c[_L] * math.sin(a_new)
            cells.append(c)
            x, y, a, prev_l = c[_X], c[_Y], a_new, c[_L]
    return _centre(cells)


def _bacillus(rng: np.random.Generator) -> list[list[float]]:
    """Large boxcar rods with square ends, in short chains; some with unstained oval spores."""
    n = _n_from(rng, {1: 0.3, 2: 0.3, 3: 0.2, 4: 0.1, 5: 0.06, 6: 0.04})
    w = rng.uniform(0.45, 0.6)
    spores = rng.random() < 0.35
    cells = []
    x = y = a = 0.0
    prev_l = 0.0
    for i in range(n):
        hl = rng.uniform(1.3, 2.8)
        a_new = a + (rng.normal(0, 0.1) if i else 0.0)
        gap = rng.uniform(0.05, 0.18) if i else 0.0
        ma = (a + a_new) / 2
        x += (prev_l + hl + gap) * math.cos(ma) if i else 0.0
        y += (prev_l + hl + gap) * math.sin(ma) if i else 0.0
        sp = rng.uniform(0.7, 0.9) if spores and rng.random() < 0.6 else 0.0
        cells.append(_cell(x, y, a_new, hl, w, rc=w * 0.22, spore=sp, spore_pos=rng.choice([0.0, 0.5, -0.5]), base=0.6))
        a, prev_l = a_new, hl
    return _centre(cells)


def _candida(rng: np.random.Generator) -> list[list[float]]:
    """Oval budding yeast (3-4 x 4-6 um); sometimes a pseudohypha of elongated cells with constrictions."""

    def mottle() -> tuple[float, float, float]:
        return (rng.uniform(0.1, 0.25), rng.uniform(1.5, 3.5), rng.uniform(0, 2 * math.pi))

    if rng.random() < 0.18:
        n = int(rng.integers(3, 7))
        cells = []
        x = y = a = 0.0
        prev_l = 0.0
        for i in range(n):
            hl, w = rng.uniform(2.2, 3.8), rng.uniform(1.0, 1.4)
            a_new = a + (rng.normal(0, 0.22) if i else 0.0)
            x += (prev_l + hl - 0.25) * math.cos(a_new) if i else 0.0
            y += (prev_l + hl - 0.25) * math.sin(a_new) if i else 0.0
            cells.append(_cell(x, y, a_new, hl, w, ell=True, bead=mottle(), base=0.55))
            if rng.random() < 0.3:  # blastoconidium at the septum
                s = rng.choice([-1.0, 1.0])
                bw = rng.uniform(1.0, 1.5)
                bx = x + hl * 0.9 * math.cos(a_new) - s * (w + bw * 0.85) * math.sin(a_new)
                by = y + hl * 0.9 * math.sin(a_new) + s * (w + bw * 0.85) * math.cos(a_new)
                cells.append(_cell(bx, by, a_new + s * 1.2, bw * 1.2, bw, ell=True, bead=mottle(), base=0.55))
            a, prev_l = a_new, hl
        return _centre(cells)
    hl, w = rng.uniform(2.0, 2.9), rng.uniform(1.5, 2.0)
    cells = [_cell(0.0, 0.0, 0.0, hl, w, ell=True, bead=mottle(), base=0.55)]
    for k in range(_n_from(rng, {0: 0.4, 1: 0.45, 2: 0.15})):
        f = rng.uniform(0.4, 0.78)
        side = 0.0 if k == 0 else math.pi
        a = side + rng.normal(0, 0.35)
        bl, bw = hl * f, w * f
        dist = hl * 0.92 + bl * 0.85
        cells.append(_cell(dist * math.cos(a), dist * math.sin(a), a, bl, bw, ell=True, bead=mottle(), base=0.55))
    return cells


def _rbc(rng: np.random.Generator) -> list[list[float]]:
    r = rng.uniform(3.3, 4.0)
    return [_cell(0.0, 0.0, rng.uniform(0, math.pi), r * rng.uniform(1.0, 1.1), r, ell=True, base=0.88)]


def _neutrophil(rng: np.random.Generator) -> list[list[float]]:
    """Unlabelled distractor: pale cytoplasm and a 3-4 lobed pink-purple nucleus (sputum, blood)."""
    r = rng.uniform(4.5, 6.0)
    cyto = _cell(0, 0, rng.uniform(0, math.pi), r * 1.05, r, ell=True, base=0.9, inbox=False)
    cyto[_SF] = rng.uniform(0.12, 0.25)
    cells = [cyto]
    a0 = rng.uniform(0, 2 * math.pi)
    for i in range(int(rng.integers(2, 5))):
        a = a0 + i * rng.uniform(0.9, 1.4)
        c = _cell(1.6 * math.cos(a), 1.6 * math.sin(a), a + math.pi / 2, rng.uniform(1.1, 1.5), rng.uniform(0.75, 1.0))
        c[_RC] = -1.0
        c[_SF] = rng.uniform(0.7, 1.1)
        c[_CV] = rng.uniform(0.05, 0.25)
        c[_INBOX] = 0.0
        cells.append(c)
    return cells


_BUILDERS = {
    "s_aureus": lambda r: _staph(r, True),
    "cns": lambda r: _staph(r, False),
    "enterococcus": lambda r: _strep_chain(r, "enterococcus"),
    "gbs": lambda r: _strep_chain(r, "gbs"),
    "streptococcus": lambda r: _strep_chain(r, "streptococcus"),
    "s_pyogenes": lambda r: _strep_chain(r, "s_pyogenes"),
    "s_pneumoniae": _pneumo,
    "gn_cocci": _gn_diplo,
    "enterobacterales": _enterobacterales,
    "p_aeruginosa": lambda r: _pseudomonas(r, True),
    "pseudomonas_other": lambda r: _pseudomonas(r, False),
    "haemophilus": _haemophilus,
    "listeria": _listeria,
    "corynebacterium": _coryne,
    "bacillus": _bacillus,
    "candida": _candida,
    "rbc": _rbc,
}


# ---------------------------------------------------------------- style parameters


def _params(rng: np.random.Generator, style: str) -> dict:
    p: dict = {"name": style}
    u = rng.uniform
    if style == "blind-clean":
        p.update(
            mag=u(0.9, 1.15),
            focus=u(0.35, 0.8),
            curvature=0.0,
            zspread=0.15,
            cv=u(1.55, 2.0),
            sf=u(1.0, 1.3),
            over=0.02,
            under=u(0.0, 0.05),
            cell_var=0.12,
            bg=u(0.04, 0.12),
            bg_cv=u(0.0, 0.06),
            exposure=u(0.93, 1.0),
            vignette=u(0.03, 0.1),
            gradient=u(0.0, 0.05),
            tint=(1.0, u(0.98, 1.0), u(0.95, 1.0)),
            gamma=u(1.05, 1.2),
            shot=0.001,
            read=0.003,
            jpeg=int(rng.integers(88, 97)),
            crowd=float(np.exp(rng.normal(0, 0.25))),
            granules=u(0.3, 1.0),
            precip=0.0,
            charcoal=0.0,
            neutro=0.1 if rng.random() < 0.15 else 0.0,
            mucus=0.0,
            hue=u(-0.03, 0.03),
            field_stop=False,
            sharpen=0.0,
            ca=0.0,
            motion=0.0,
            chroma=0.0,
            sat=1.0,
        )
    elif style == "blind-field":
        over = u(0.15, 0.6) if rng.random() < 0.25 else u(0.0, 0.05)
        under = u(0.12, 0.28) if rng.random() < 0.2 else u(0.0, 0.06)
        warm = rng.random() < 0.5
        p.update(
            mag=float(np.exp(u(math.log(0.6), math.log(2.0)))),
            focus=float(u(0.4, 1.0) + rng.exponential(0.45)),
            curvature=u(0.0, 1.6),
            zspread=u(0.1, 0.6),
            cv=u(1.0, 2.4),
            sf=u(0.75, 1.6),
            over=over,
            under=under,
            cell_var=u(0.12, 0.3),
            bg=u(0.04, 0.22),
            bg_cv=under * u(0.3, 1.0),
            exposure=u(0.72, 1.05),
            vignette=u(0.05, 0.35),
            gradient=u(0.0, 0.25),
            tint=(1.0, u(0.9, 0.98), u(0.72, 0.9)) if warm else (u(0.9, 1.0), u(0.96, 1.0), 1.0),
            gamma=u(0.95, 1.35),
            shot=u(0.002, 0.01),
            read=u(0.004, 0.015),
            jpeg=int(rng.integers(55, 93)),
            crowd=float(np.exp(rng.normal(0, 0.6))),
            granules=u(0.5, 2.5),
            precip=u(0, 1) if rng.random() < 0.3 else 0,
            charcoal=u(0.3, 1.0) if rng.random() < 0.15 else 0.0,
            neutro=u(0.3, 1.5) if rng.random() < 0.35 else 0.0,
            mucus=u(0.3, 1.0) if rng.random() < 0.3 else 0.0,
            hue=u(-0.12, 0.12),
            field_stop=False,
            sharpen=0.0 if rng.random() < 0.7 else u(0.3, 0.8),
            ca=0.0,
            motion=0.0,
            chroma=0.0,
            sat=u(0.9, 1.1),
        )
    elif style == "blind-phone":
        cast = rng.normal(0, 0.05, 3)
        p.update(
            mag=u(1.0, 2.0),
            focus=float(u(0.5, 1.2) + rng.exponential(0.4)),
            curvature=u(0.3, 1.8),
            zspread=u(0.1, 0.5),
            cv=u(1.1, 2.2),
            sf=u(0.7, 1.5),
            over=u(0.0, 0.3) if rng.random() < 0.3 else 0.02,
            under=u(0.0, 0.15),
            cell_var=u(0.12, 0.25),
            bg=u(0.05, 0.25),
            bg_cv=u(0.0, 0.08),
            exposure=u(0.8, 1.1),
            vignette=u(0.15, 0.4),
            gradient=u(0.0, 0.15),
            tint=tuple(float(t) for t in np.clip(1 + cast, 0.8, 1.1)),
            gamma=u(1.2, 1.6),
            shot=u(0.002, 0.008),
            read=u(0.004, 0.012),
            jpeg=int(rng.integers(50, 86)),
            crowd=float(np.exp(rng.normal(0, 0.5))),
            granules=u(0.5, 2.0),
            precip=u(0, 1) if rng.random() < 0.2 else 0,
            charcoal=u(0.3, 1.0) if rng.random() < 0.1 else 0.0,
            neutro=u(0.3, 1.2) if rng.random() < 0.3 else 0.0,
            mucus=u(0.3, 1.0) if rng.random() < 0.25 else 0.0,
            hue=u(-0.08, 0.08),
            field_stop=True,
            sharpen=u(0.5, 1.3),
            ca=u(0.002, 0.008),
            motion=u(1.0, 2.5) if rng.random() < 0.15 else 0.0,
            chroma=u(0.2, 0.6),
            sat=u(1.0, 1.2),
        )
    else:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    return p


# ---------------------------------------------------------------- field composition


def _stain(cells: np.ndarray, kind: str, p: dict, rng: np.random.Generator) -> None:
    """Assign dye loads in place. Optical density scales with (cell thickness)^0.5 and per-cell variation."""
    n = len(cells)
    var = np.exp(rng.normal(0, p["cell_var"], n)) * np.sqrt(np.clip(2 * cells[:, _W], 0.2, 1.5))
    # rows already carrying dyes (neutrophil parts, capsule halos) keep them
    own = (np.abs(cells[:, _CV]) + np.abs(cells[:, _SF]) + np.abs(cells[:, _BG]) + np.abs(cells[:, _DK])) == 0
    if kind == "gp":
        cv = p["cv"] * var
        sf = 0.2 * p["sf"] * var
        lost = (rng.random(n) < p["over"]) * rng.uniform(0.45, 0.95, n)
        cv, sf = cv * (1 - lost), sf + lost * p["sf"] * var * 0.9
    elif kind == "gn":
        sf = p["sf"] * var
        cv = p["under"] * p["cv"] * var * rng.uniform(0.4, 1.0, n)
    elif kind == "rbc":
        cv = np.zeros(n)
        sf = 0.06 * p["sf"] * var
        cells[:, _HB] = np.where(own, rng.uniform(0.26, 0.4) * var * 0.6, cells[:, _HB])
        cells[:, _PALLOR] = rng.uniform(0.35, 0.7)
    else:
        return
    cells[:, _CV] = np.where(own, cv, cells[:, _CV])
    cells[:, _SF] = np.where(own, sf, cells[:, _SF])


def _place(cells: np.ndarray, cx: float, cy: float, theta: float, scale: float) -> np.ndarray:
    """um-local cells -> pixel cells: rotate by theta, scale, translate."""
    out = cells.copy()
    c, s = math.cos(theta), math.sin(theta)
    out[:, _X] = cx + scale * (c * cells[:, _X] - s * cells[:, _Y])
    out[:, _Y] = cy + scale * (s * cells[:, _X] + c * cells[:, _Y])
    out[:, _ANG] = cells[:, _ANG] + theta
    out[:, _L] *= scale
    out[:, _W] *= scale
    out[:, _RC] = np.where(cells[:, _RC] >= 0, cells[:, _RC] * scale, -1.0)
    out[:, _CUT] = np.where(cells[:, _CUT] < _NO_CUT, cells[:, _CUT] * scale, _NO_CUT)
    out[:, _BFREQ] = cells[:, _BFREQ] / scale
    return out


def _extent(cells: np.ndarray) -> np.ndarray:
    """Axis-aligned box of the cells that count towards the annotation (pixel cells)."""
    c = cells[cells[:, _INBOX] > 0]
    ca, sa = np.abs(np.cos(c[:, _ANG])), np.abs(np.sin(c[:, _ANG]))
    t = np.abs(c[:, _TAPER])
    ell = c[:, _RC] < 0
    u = np.where(t > 0, (np.sqrt(1 + 8 * t * t) - 1) / (4 * np.maximum(t, 1e-6)), 0.0)
    w = np.where(ell, c[:, _W] * (1 + t * u) * np.sqrt(1 - u * u), c[:, _W] * (1 + t))
    length = c[:, _L]
    rc = np.clip(c[:, _RC], 0, None)
    hx = np.where(ell, np.hypot(length * ca, w * sa), ca * (length - rc) + sa * (w - rc) + rc)
    hy = np.where(ell, np.hypot(length * sa, w * ca), sa * (length - rc) + ca * (w - rc) + rc)
    return np.array(
        [(c[:, _X] - hx).min(), (c[:, _Y] - hy).min(), (c[:, _X] + hx).max(), (c[:, _Y] + hy).max()], np.float32
    )


def _raster(cells: np.ndarray, size: int) -> np.ndarray:
    """Optical-density maps (5, size, size) for crystal violet, safranin, haemoglobin, background, opaque."""
    hp = size + 2 * _PAD
    canvas = np.zeros((5, hp, hp), np.float32)
    if len(cells) == 0:
        return canvas[:, _PAD:-_PAD, _PAD:-_PAD]
    cells = cells.astype(np.float32)
    t = np.abs(cells[:, _TAPER])
    reach = np.maximum(cells[:, _L], cells[:, _W] * (1 + t)) + 3.0 * cells[:, _SOFT] + 1.5
    sizes = np.array(_BUCKETS)
    bucket = np.searchsorted(sizes, 2 * reach).clip(0, len(sizes) - 1)
    ell_all = cells[:, _RC] < 0
    for b in np.unique(bucket):
        pp = int(sizes[b])
        for ell in (False, True):
            sel = np.nonzero((bucket == b) & (ell_all == ell))[0]
            if len(sel) == 0:
                continue
            c = cells[sel]
            x0 = np.floor(c[:, _X] - pp / 2).astype(np.int64) + _PAD
            y0 = np.floor(c[:, _Y] - pp / 2).astype(np.int64) + _PAD
            ok = (x0 >= 0) & (y0 >= 0) & (x0 + pp <= hp) & (y0 + pp <= hp)
            c, x0, y0 = c[ok], x0[ok], y0[ok]
            if len(c) == 0:
                continue
            grid = np.arange(pp, dtype=np.float32) + 0.5

            def col(k: int, c: np.ndarray = c) -> np.ndarray:
                return c[:, k][:, None, None]

            px = (x0 - _PAD).astype(np.float32)[:, None, None] + grid[None, None, :] - col(_X)
            py = (y0 - _PAD).astype(np.float32)[:, None, None] + grid[None, :, None] - col(_Y)
            ct, st = np.cos(col(_ANG)), np.sin(col(_ANG))
            s = ct * px + st * py
            v = ct * py - st * px
            half_len, half_wid = col(_L), col(_W)
            ws = 1.0 + col(_TAPER) * np.clip(s / half_len, -1.0, 1.0)
            v2 = v / ws
            if ell:
                ex, ey = s / half_len, v2 / half_wid
                k = np.sqrt(ex * ex + ey * ey)
                g = np.sqrt((ex / half_len) ** 2 + (ey / half_wid) ** 2)
                sd = (k - 1.0) * k / np.maximum(g, 1e-6)
            else:
                rc = col(_RC)
                ax = np.abs(s) - (half_len - rc)
                ay = np.abs(v2) - (half_wid - rc)
                sd = np.sqrt(np.maximum(ax, 0) ** 2 + np.maximum(ay, 0) ** 2) + np.minimum(np.maximum(ax, ay), 0) - rc
            sd = np.maximum(sd, s - col(_CUT))
            e = np.clip(-sd / half_wid, 0.0, 1.0)
            thick = np.sqrt(e * (2.0 - e))
            cov = 0.5 - 0.5 * np.tanh(sd / (2.0 * col(_SOFT)))
            base = col(_BASE)
            prof = cov * (base + (1.0 - base) * thick)
            if np.any(c[:, _BAMP] > 0):
                prof *= 1.0 + col(_BAMP) * np.cos(col(_BFREQ) * s + col(_BPH))
            if np.any(c[:, _SPORE] > 0):
                r_sp = np.maximum(col(_SPORE) * half_wid, 1e-3)
                d2 = ((s - col(_SPOS) * half_len) / (1.5 * r_sp)) ** 2 + (v / r_sp) ** 2
                prof *= 1.0 - 0.85 * (col(_SPORE) > 0) * np.exp(-(d2**2))
            if np.any(c[:, _PALLOR] > 0):
                r2 = (s / half_len) ** 2 + (v2 / half_wid) ** 2
                prof *= 1.0 - col(_PALLOR) * np.exp(-r2 / 0.2)
            for ch, dye in enumerate(_DYES):
                wts = c[:, dye]
                nz = np.nonzero(wts)[0]
                if len(nz) == 0:
                    continue
                plane = canvas[ch]
                for i in nz:
                    plane[y0[i] : y0[i] + pp, x0[i] : x0[i] + pp] += wts[i] * prof[i]
    return canvas[:, _PAD:-_PAD, _PAD:-_PAD]


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise (zero mean, ~unit std) from a `cells` x `cells` lattice, bicubic-upsampled."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, np.float32)


def _debris(rng: np.random.Generator, p: dict, n_field: float) -> list[tuple[str, np.ndarray]]:
    """Unlabelled clutter: protein granules, crystal-violet precipitate, charcoal, neutrophils."""
    out: list[tuple[str, np.ndarray]] = []
    for _ in range(rng.poisson(40 * p["granules"] * n_field)):
        w = rng.uniform(0.06, 0.2)
        c = np.array([_cell(0, 0, rng.uniform(0, math.pi), w * rng.uniform(1, 2), w, ell=True, base=0.8, inbox=False)])
        purple = rng.random() < 0.15
        c[0, _CV if purple else _SF] = rng.uniform(0.2, 0.8) * (p["cv"] if purple else p["sf"])
        out.append(("debris", c))
    for _ in range(rng.poisson(12 * p["precip"] * n_field)):
        rows = []
        for _k in range(int(rng.integers(1, 5))):
            w = rng.uniform(0.06, 0.25)
            rows.append(
                _cell(
                    rng.normal(0, 0.4),
                    rng.normal(0, 0.4),
                    rng.uniform(0, math.pi),
                    w * rng.uniform(1, 6),
                    w,
                    rc=0.02,
                    base=0.9,
                    inbox=False,
                )
            )
        c = np.array(rows)
        c[:, _CV] = p["cv"] * rng.uniform(1.0, 2.0)
        out.append(("debris", c))
    for _ in range(rng.poisson(10 * p["charcoal"] * n_field)):
        rows = []
        r0 = float(np.exp(rng.uniform(math.log(0.25), math.log(1.6))))
        for _k in range(int(rng.integers(2, 6))):
            w = r0 * rng.uniform(0.3, 0.7)
            rows.append(
                _cell(
                    rng.normal(0, r0 * 0.4),
                    rng.normal(0, r0 * 0.4),
                    rng.uniform(0, math.pi),
                    w * rng.uniform(1, 2),
                    w,
                    rc=w * rng.uniform(0.1, 0.6),
                    base=1.0,
                    inbox=False,
                )
            )
        c = np.array(rows)
        c[:, _DK] = rng.uniform(1.5, 3.0)
        out.append(("debris", c))
    for _ in range(rng.poisson(4 * p["neutro"] * n_field)):
        out.append(("neutro", np.array(_neutrophil(rng))))
    return out


def _random_mix(rng: np.random.Generator, p: dict) -> tuple[list[tuple[str, float]], float]:
    """(organism, relative abundance) list and red-cell abundance for a random field."""
    codes = list(_PREVALENCE)
    w = np.sqrt(np.array([_PREVALENCE[c] for c in codes]))
    w /= w.sum()
    u = rng.random()
    if u < 0.03:
        mix: list[tuple[str, float]] = []
    else:
        k = 1 if u < 0.78 else (2 if u < 0.95 else 3)
        picks = rng.choice(len(codes), size=k, replace=False, p=w)
        mix = [(codes[picks[0]], 1.0)] + [(codes[i], rng.uniform(0.1, 0.5)) for i in picks[1:]]
    rbc = 0.0 if rng.random() < 0.3 else float(np.exp(rng.normal(0, 0.8)))
    if not mix:
        rbc = max(rbc, 0.5)
    return mix, rbc


def render(seed: int, style: str, size: int = 640, species: list[str] | None = None) -> BlindSmear:
    """Render one synthetic Gram-stained smear photograph, deterministic for (seed, style, size, species).

    `species=None` draws a random field (usually one or two dominant organisms, red cells in many). A list
    draws exactly one group per entry (codes from LABELS, repeats allowed), each fully in view, plus red
    cells and clutter as the style decides.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if species is not None:
        bad = [c for c in species if c not in _BUILDERS]
        if bad:
            raise ValueError(f"unknown organism code(s) {bad}; expected codes from medcloud.vision.labels")
    if size < 32:
        raise ValueError("size must be at least 32")
    rng = np.random.default_rng([int(seed) % (1 << 63), STYLES.index(style), size])
    p = _params(rng, style)
    # defocus is fixed in um, so its blur in pixels grows with magnification
    p["focus"] *= p["mag"] ** 0.7
    p["curvature"] *= p["mag"] ** 0.7
    scale = BASE_PX_PER_UM * p["mag"] * size / 640.0
    field_frac = (size / scale / (640.0 / BASE_PX_PER_UM)) ** 2  # visible area relative to a reference field

    # Field stop (phone through the eyepiece): visible disc.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if p["field_stop"]:
        fr = rng.uniform(0.52, 0.75) * size
        fcx, fcy = size / 2 + rng.normal(0, 0.05 * size), size / 2 + rng.normal(0, 0.05 * size)
        rr = np.sqrt((xx - fcx) ** 2 + (yy - fcy) ** 2)
        visible = np.clip((fr - rr) / (0.015 * size) + 0.5, 0.0, 1.0)
        p.update(field_stop_radius=round(float(fr), 1))
    else:
        visible = np.ones((size, size), np.float32)
    vis_int = visible.cumsum(0).cumsum(1)

    def vis_frac(b: np.ndarray) -> float:
        x0, y0 = int(max(b[0], 0)), int(max(b[1], 0))
        x1, y1 = int(min(math.ceil(b[2]), size)) - 1, int(min(math.ceil(b[3]), size)) - 1
        if x1 <= x0 or y1 <= y0:
            return 0.0
        tot = vis_int[y1, x1] - (vis_int[y0 - 1, x1] if y0 else 0) - (vis_int[y1, x0 - 1] if x0 else 0)
        tot += vis_int[y0 - 1, x0 - 1] if (x0 and y0) else 0
        return float(tot) / ((x1 - x0 + 1) * (y1 - y0 + 1))

    # Which groups to draw.
    wanted: list[tuple[str, bool]] = []  # (code, must be fully visible)
    if species is None:
        mix, rbc_ab = _random_mix(rng, p)
        for code, ab in mix:
            lo, hi = _DENSITY[code]
            lam = rng.uniform(lo, hi) * ab * p["crowd"] * field_frac
            wanted += [(code, False)] * max(int(rng.poisson(lam)), 1)
    else:
        rbc_ab = 0.0 if rng.random() < 0.35 else float(np.exp(rng.normal(-0.3, 0.7)))
        wanted += [(c, True) for c in species]
    n_rbc = int(rng.poisson(18 * rbc_ab * field_frac)) if rbc_ab > 0 else 0
    wanted = [(c, True) for c, f in wanted if f] + [(c, f) for c, f in wanted if not f] + [("rbc", False)] * n_rbc
    # Explicit groups first (placed where they fit); the rest shuffled so mixtures interleave.
    head = [w for w in wanted if w[1]]
    tail = [w for w in wanted if not w[1]]
    order = rng.permutation(len(tail))
    wanted = head + [tail[i] for i in order]

    occ = np.zeros((size // 8 + 2, size // 8 + 2), np.float32)
    occ_rbc = np.zeros_like(occ)
    placed: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    margin = 0.08 * size
    for code, must in wanted:
        local = np.array(_BUILDERS[code](rng), np.float64)
        _stain(local, _GRAM[code], p, rng)
        theta = rng.uniform(0, 2 * math.pi)
        z = abs(rng.normal(0, p["zspread"]))
        local[:, _SOFT] = 0.42 + z * 1.6
        grid = occ_rbc if code == "rbc" else occ
        best, best_score = None, -1e9
        for _attempt in range(40 if must else 6):
            cx, cy = rng.uniform(-margin, size + margin), rng.uniform(-margin, size + margin)
            cells = _place(local, cx, cy, theta, scale)
            b = _extent(cells)
            if must:
                # recentre so the group's box centre lands where we aimed, fully inside where it fits
                w, h = b[2] - b[0], b[3] - b[1]
                tx = rng.uniform(2, max(size - w - 2, 2.5)) - b[0]
                ty = rng.uniform(2, max(size - h - 2, 2.5)) - b[1]
                cells[:, _X] += tx
                cells[:, _Y] += ty
                b = b + np.array([tx, ty, tx, ty], np.float32)
            g0 = np.clip((b[:2] / 8).astype(int), 0, occ.shape[0] - 1)
            g1 = np.clip((b[2:] / 8).astype(int) + 1, 0, occ.shape[0] - 1)
            crowd = float(grid[g0[1] : g1[1], g0[0] : g1[0]].mean()) if (g1 > g0).all() else 0.0
            score = -crowd + (vis_frac(b) if must else 0.0) * 4
            if score > best_score:
                best, best_score, best_b, best_g = cells, score, b, (g0, g1)
            if crowd < (0.3 if code == "rbc" else 0.12) and (not must or vis_frac(b) > 0.97):
                break
        cells, b, (g0, g1) = best, best_b, best_g
        grid[g0[1] : g1[1], g0[0] : g1[0]] += 0.5
        placed.append(cells)
        full = max((b[2] - b[0]) * (b[3] - b[1]), 1e-3)
        cb = np.clip(b, 0, size).astype(np.float32)
        inside = (cb[2] - cb[0]) * (cb[3] - cb[1]) / full
        if cb[2] - cb[0] >= 2 and cb[3] - cb[1] >= 2 and (must or (inside >= 0.5 and vis_frac(cb) >= 0.5)):
            boxes.append(cb)
            labels.append(LABEL_INDEX[code])

    for _kind, local in _debris(rng, p, field_frac):
        local[:, _SOFT] = 0.42 + abs(rng.normal(0, p["zspread"])) * 1.6
        if _kind == "neutro":
            _stain(local, "gn", p, rng)
        placed.append(
            _place(
                local,
                rng.uniform(-margin, size + margin),
                rng.uniform(-margin, size + margin),
                rng.uniform(0, 2 * math.pi),
                scale,
            )
        )

    od = _raster(np.concatenate(placed) if placed else np.zeros((0, _NF)), size)
    image = _photograph(rng, p, od, size, xx, yy, visible)
    style_info = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in p.items()}
    style_info["scale_px_per_um"] = round(scale, 3)
    return BlindSmear(
        image=image,
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        labels=np.array(labels, np.int64),
        style=style_info,
    )


def _photograph(
    rng: np.random.Generator, p: dict, od: np.ndarray, size: int, xx: np.ndarray, yy: np.ndarray, visible: np.ndarray
) -> np.ndarray:
    """Background, Beer-Lambert absorption, illumination, optics and camera."""
    lat = max(4, size // 64)
    low = _noise(rng, size, lat)
    mid = _noise(rng, size, max(8, size // 16))
    fine = _noise(rng, size, max(16, size // 4))
    bg = p["bg"] * np.clip(1.0 + 0.4 * low + 0.12 * mid + 0.1 * fine, 0.05, None)
    if p["mucus"] > 0:  # stretched strands of mucus / fibrin along the smearing direction
        lattice = rng.standard_normal((3, 28)).astype(np.float32)
        field = Image.fromarray(lattice, mode="F").resize((size * 2, size * 2), Image.Resampling.BICUBIC)
        field = np.asarray(field.rotate(float(rng.uniform(0, 180)), Image.Resampling.BILINEAR), np.float32)
        off = size // 2
        ridge = np.exp(-((field[off : off + size, off : off + size] / 0.12) ** 2))  # thin fibres at zero-crossings
        bg += p["mucus"] * p["bg"] * 1.5 * ridge * np.clip(1 + 0.6 * mid, 0, None)
    bg = np.maximum(bg + od[3] * p["bg"] * 1.2, 0.0)  # capsule halos push background away
    thick = np.clip(1.0 + 0.18 * low, 0.6, 1.4)  # thicker smear regions stain a little heavier

    hue = p["hue"]
    a_cv = _A_CV * np.array([1 - hue, 1.0, 1 + 2 * hue], np.float32)
    a_sf = _A_SF * np.array([1.0, 1.0, 1 - 1.5 * hue], np.float32)
    a_bg = (1 - p["bg_cv"] * 4) * _A_SF + p["bg_cv"] * 4 * _A_CV if p["bg_cv"] > 0 else _A_SF
    a_bg = 0.7 * a_bg + 0.3 * np.array([0.35, 0.5, 0.55], np.float32)  # proteinaceous broth is duller than dye
    maps = np.stack([od[0] * thick, od[1] * thick, od[2], bg, od[4]]).reshape(5, -1)
    spectra = np.stack([a_cv, a_sf, _A_HB, a_bg, _A_DK]).astype(np.float32)
    absorb = (spectra.T @ maps).T.reshape(size, size, 3)
    trans = np.exp(-absorb)

    cxr, cyr = size / 2 + rng.normal(0, 0.1 * size), size / 2 + rng.normal(0, 0.1 * size)
    r2 = ((xx - cxr) ** 2 + (yy - cyr) ** 2) / (0.5 * size) ** 2
    ga = rng.uniform(0, 2 * math.pi)
    grad = ((xx - size / 2) * math.cos(ga) + (yy - size / 2) * math.sin(ga)) / size
    illum = p["exposure"] * (1 - p["vignette"] * r2 * 0.5) * (1 + p["gradient"] * grad * 2)
    light = illum[:, :, None] * np.array(p["tint"], np.float32)[None, None, :] * trans

    if p["focus"] > 0.25:
        light = ndimage.gaussian_filter(light, (p["focus"], p["focus"], 0), truncate=3.0)
    if p["curvature"] > 0.05:
        extra = ndimage.gaussian_filter(light, (p["curvature"], p["curvature"], 0), truncate=3.0)
        wgt = np.clip(r2 * 0.5, 0, 1)[:, :, None]
        light = light * (1 - wgt) + extra * wgt
    if p["motion"] > 0:
        light = ndimage.uniform_filter1d(light, max(2, int(p["motion"])), axis=int(rng.integers(0, 2)))
    if p["field_stop"]:
        light = light * visible[:, :, None] + (1 - visible[:, :, None]) * 0.015

    light = np.clip(light, 0, None)
    sigma = np.sqrt(light * p["shot"] + p["read"] ** 2)
    noise = rng.standard_normal(light.shape, dtype=np.float32)
    if p["chroma"] > 0:  # demosaicked chroma noise: low-pass, per channel
        noise = noise + p["chroma"] * ndimage.gaussian_filter(
            rng.standard_normal(light.shape, dtype=np.float32), (1.2, 1.2, 0)
        )
    light = light + sigma * noise
    out = np.clip(light, 0, 1) ** (1.0 / p["gamma"])
    if p["sat"] != 1.0:
        grey = out.mean(axis=2, keepdims=True)
        out = np.clip(grey + (out - grey) * p["sat"], 0, 1)
    img8 = (out * 255 + 0.5).astype(np.uint8)
    pil = Image.fromarray(img8, "RGB")
    if p["ca"] > 0:  # lateral chromatic aberration: red and blue planes scaled about the centre
        r, g, b = pil.split()

        def zoom(ch: Image.Image, f: float) -> Image.Image:
            n = round(size * f)
            big = ch.resize((n, n), Image.Resampling.BILINEAR)
            o = (n - size) // 2
            return big.crop((o, o, o + size, o + size))

        pil = Image.merge("RGB", (zoom(r, 1 + p["ca"]), g, zoom(b, 1 + p["ca"] * 0.3)))
    if p["sharpen"] > 0:
        pil = pil.filter(ImageFilter.UnsharpMask(radius=1.6, percent=int(120 * p["sharpen"]), threshold=2))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(p["jpeg"]), subsampling=2 if p["jpeg"] < 85 else 0)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), np.uint8).copy()


def main() -> None:
    """Write a few example renders with their boxes to a folder (for eyeballing only)."""
    import argparse
    from pathlib import Path

    from PIL import ImageDraw

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/blind-examples")
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for style in STYLES:
        for i in range(args.n):
            sm = render(args.seed + i, style)
            im = Image.fromarray(sm.image)
            draw = ImageDraw.Draw(im)
            for box, lab in zip(sm.boxes, sm.labels, strict=True):
                draw.rectangle([float(v) for v in box], outline=(0, 200, 0))
                draw.text((float(box[0]) + 1, float(box[1]) - 10), LABEL_CODES[int(lab)], fill=(0, 120, 0))
            im.save(out / f"{style}-{args.seed + i}.png")
            Image.fromarray(sm.image).save(out / f"{style}-{args.seed + i}-raw.png")


if __name__ == "__main__":
    main()
