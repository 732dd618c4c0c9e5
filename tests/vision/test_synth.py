"""The SYNTHETIC smear generator: exact boxes, every label drawable, site styles differ, metadata says synthetic."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcloud.vision.labels import LABEL_CODES, LABELS, NUM_CLASSES
from medcloud.vision.synth import MORPHOLOGY, SITES, UNSEEN_SITES, SiteStyle, Smear, render_smear, save_png


def test_label_table_has_17_labels_with_both_languages() -> None:
    assert NUM_CLASSES == 17
    assert set(MORPHOLOGY) == set(LABEL_CODES)
    for lab in LABELS:
        assert lab.en and lab.ja and lab.ja != lab.en


def test_render_is_deterministic_per_seed() -> None:
    a = render_smear(7, "site-b", (320, 320), 0.5)
    b = render_smear(7, "site-b", (320, 320), 0.5)
    c = render_smear(8, "site-b", (320, 320), 0.5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.image, c.image)


def test_every_label_is_drawn_inside_its_box() -> None:
    for code in LABEL_CODES:
        s = render_smear(11, "site-a", (640, 640), 1.0, species=[code] * 3)
        assert len(s.boxes) >= 1
        assert code in {LABEL_CODES[i] for i in s.labels}
        # Stain is darker inside a box than in the smear background far from every box.
        img = s.image.astype(np.float32).mean(axis=2)
        mask = np.zeros(img.shape, dtype=bool)
        for x0, y0, x1, y1 in s.boxes.astype(int):
            mask[max(y0 - 6, 0) : y1 + 6, max(x0 - 6, 0) : x1 + 6] = True
        for (x0, y0, x1, y1), lab in zip(s.boxes.astype(int), s.labels, strict=True):
            inside = img[y0:y1, x0:x1]
            assert inside.min() < np.median(img[~mask]) - 25, LABEL_CODES[lab]
            assert 4 <= x1 - x0 <= 200 and 4 <= y1 - y0 <= 200


def test_gram_positive_is_purple_and_negative_is_pink() -> None:
    def darkest_pixels(code: str) -> np.ndarray:
        s = render_smear(3, "site-a", (640, 640), 1.0, species=[code] * 4)
        img = s.image.astype(np.float32)
        sel = [i for i, lab in enumerate(s.labels) if LABEL_CODES[lab] == code]
        x0, y0, x1, y1 = s.boxes[sel[0]].astype(int)
        patch = img[y0:y1, x0:x1].reshape(-1, 3)
        return patch[np.argsort(patch.sum(axis=1))[:20]].mean(axis=0)

    r, _, b = darkest_pixels("s_aureus")
    assert b > r  # crystal violet: blue exceeds red
    r, _g, b = darkest_pixels("enterobacterales")
    assert r > b  # safranin: red exceeds blue


def test_sites_have_distinct_styles_and_unseen_ones_exist() -> None:
    assert UNSEEN_SITES and all(not SITES[s].seen for s in UNSEEN_SITES)
    means = {
        s: render_smear(5, s, (320, 320), 0.5, species=["cns"] * 3).image.reshape(-1, 3).mean(axis=0) for s in SITES
    }
    names = list(means)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert np.abs(means[names[i]] - means[names[j]]).max() > 2.0, (names[i], names[j])


def test_png_carries_the_synthetic_label(tmp_path: Path) -> None:
    s = render_smear(9, "site-d-webcam", (320, 320), 0.5)
    save_png(s, str(tmp_path / "x.png"))
    with Image.open(tmp_path / "x.png") as im:
        meta = json.loads(im.text["medcloud:synthetic"])
        assert "SYNTHETIC" in im.text["Description"]
    assert meta["synthetic"] is True and meta["site"] == "site-d-webcam"


# ---- issue 13: the generator spans what laboratories produce (each factor really varies) ----


def _style(**kw: float) -> SiteStyle:
    return replace(SiteStyle(), **kw)


def test_magnification_changes_object_size() -> None:
    sizes = {}
    for mag in (0.5, 1.0, 2.0):
        s = render_smear(21, style=_style(magnification=mag), size=(320, 320), scale=0.5, species=["candida"] * 2)
        rbc = s.labels == LABEL_CODES.index("rbc")
        assert len(s.boxes) and (~rbc).any()
        sizes[mag] = float(np.median((s.boxes[:, 2] - s.boxes[:, 0])[~rbc]))
    assert sizes[2.0] > 1.6 * sizes[1.0] > 1.6 * 1.6 * sizes[0.5] * 0.8


def test_organism_size_shrinks_organisms_against_red_cells() -> None:
    rbc = LABEL_CODES.index("rbc")
    sizes: dict[float, tuple[float, float]] = {}
    for f in (1.0, 0.5):
        org, red = [], []
        for seed in range(21, 25):
            s = render_smear(seed, style=_style(organism_size=f), size=(320, 320), scale=0.5, species=["s_aureus"] * 3)
            w = s.boxes[:, 2] - s.boxes[:, 0]
            org += list(w[s.labels != rbc])
            red += list(w[s.labels == rbc])
        sizes[f] = (float(np.median(org)), float(np.median(red)))
    assert 0.4 < sizes[0.5][0] / sizes[1.0][0] < 0.65  # organisms about half as wide ...
    assert 0.85 < sizes[0.5][1] / sizes[1.0][1] < 1.15  # ... red cells as before
    assert all(site.sample(np.random.default_rng(0)).organism_size == 1.0 for site in SITES.values())


def test_crowding_puts_cells_on_red_cells_and_red_cells_on_each_other() -> None:
    def overlaps(s: Smear) -> tuple[int, int]:
        rbc = s.labels == LABEL_CODES.index("rbc")
        b = s.boxes
        iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
        ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        share = iw * ih / np.minimum(area[:, None], area[None, :])
        np.fill_diagonal(share, 0)
        on_rbc = int((share[~rbc][:, rbc] > 0.3).sum())
        rbc_rbc = int((share[rbc][:, rbc] > 0.2).sum()) // 2
        return on_rbc, rbc_rbc

    crowded = [overlaps(render_smear(30 + i, style=_style(crowding=1.0), size=(320, 320), scale=0.5)) for i in range(3)]
    sparse = [overlaps(render_smear(30 + i, style=_style(crowding=0.0), size=(320, 320), scale=0.5)) for i in range(3)]
    assert sum(c[0] for c in crowded) >= 3 and sum(c[1] for c in crowded) >= 3
    assert sum(c[0] for c in sparse) == 0 and sum(c[1] for c in sparse) == 0


def test_group_and_cell_box_conventions() -> None:
    g = render_smear(40, "site-a", (320, 320), 0.5, species=["s_aureus"] * 3)
    c = render_smear(40, "site-a", (320, 320), 0.5, species=["s_aureus"] * 3, boxes="cell")
    assert np.array_equal(g.image, c.image)  # same smear, only the annotation differs
    sa = LABEL_CODES.index("s_aureus")
    assert (c.labels == sa).sum() >= 5 * (g.labels == sa).sum()
    for box in c.boxes[c.labels == sa]:  # every cell box lies inside its group's box
        inside = (g.boxes[:, 0] <= box[0] + 1) & (g.boxes[:, 1] <= box[1] + 1)
        inside &= (g.boxes[:, 2] >= box[2] - 1) & (g.boxes[:, 3] >= box[3] - 1)
        assert inside.any()
    with pytest.raises(ValueError):
        render_smear(40, "site-a", (64, 64), 0.1, boxes="polygon")


def test_loose_clusters_and_single_cells() -> None:
    sa = LABEL_CODES.index("s_aureus")

    def cells_and_extent(seed: int, **kw: float) -> tuple[int, float]:
        st = _style(**kw)
        c = render_smear(seed, style=st, size=(320, 320), scale=0.5, species=["s_aureus"], boxes="cell")
        g = render_smear(seed, style=st, size=(320, 320), scale=0.5, species=["s_aureus"])
        box = g.boxes[g.labels == sa][0]
        return int((c.labels == sa).sum()), float(box[2] - box[0])

    n_tight, w_tight = cells_and_extent(50)
    n_loose, w_loose = cells_and_extent(50, spread=2.5)
    assert n_loose == n_tight and w_loose > 1.2 * w_tight
    # Groups keep between group_size and all of their cells: small groups down to single cells occur.
    small = [cells_and_extent(seed, group_size=0.02)[0] for seed in range(50, 58)]
    assert min(small) <= 2 and max(small) < n_tight * 2 and np.mean(small) < 0.75 * n_tight


def _darkest(s: Smear, code: str) -> np.ndarray:
    sel = [i for i, lab in enumerate(s.labels) if LABEL_CODES[lab] == code]
    x0, y0, x1, y1 = s.boxes[sel[0]].astype(int)
    patch = s.image[y0:y1, x0:x1].astype(np.float32).reshape(-1, 3)
    return patch[np.argsort(patch.sum(axis=1))[:20]].mean(axis=0)


def test_stain_hue_strength_blur_debris_and_light_vary() -> None:
    kw = {"size": (320, 320), "scale": 0.5, "species": ["s_aureus"] * 2}
    violet = _darkest(render_smear(60, style=_style(), **kw), "s_aureus")  # type: ignore[arg-type]
    blue = _darkest(render_smear(60, style=_style(cv_hue=1.0), **kw), "s_aureus")  # type: ignore[arg-type]
    pale = _darkest(render_smear(60, style=_style(cv_gain=0.5), **kw), "s_aureus")  # type: ignore[arg-type]
    assert blue[2] - blue[0] > violet[2] - violet[0] + 10 and pale.sum() > violet.sum() + 60

    def sharpness(img: np.ndarray) -> float:
        return float(np.abs(np.diff(img.astype(np.float32).mean(axis=2), axis=1)).mean())

    base = render_smear(61, style=_style(), **kw).image  # type: ignore[arg-type]
    for blurred in (_style(blur=2.0), _style(motion=4.0)):
        assert sharpness(render_smear(61, style=blurred, **kw).image) < 0.8 * sharpness(base)  # type: ignore[arg-type]
    dirty = render_smear(61, style=_style(debris=1.0), **kw)  # type: ignore[arg-type]
    assert (dirty.image.sum(axis=2) < 300).sum() > (base.sum(axis=2) < 300).sum()
    tilted = render_smear(61, style=_style(tilt=0.35, vignette=0.0), **kw).image.astype(np.float32)  # type: ignore[arg-type]
    halves = [tilted[:, :160].mean(), tilted[:, 160:].mean(), tilted[:160].mean(), tilted[160:].mean()]
    assert max(abs(halves[0] - halves[1]), abs(halves[2] - halves[3])) > 4


def test_domain_randomisation_spans_the_factors_and_training_never_draws_unseen_sites() -> None:
    from medcloud.vision.synth import TRAINING_SITES, random_style
    from medcloud.vision.train import TrainConfig, training_site

    rng = np.random.default_rng(0)
    styles = [random_style(rng) for _ in range(300)]
    mags = [s.magnification for s in styles]
    assert min(mags) < 0.65 and max(mags) > 1.8
    assert max(s.cv_hue for s in styles) > 0.9 and min(s.cv_gain for s in styles) < 0.6
    for name in ("blur", "motion", "crowding", "debris", "moire", "jpeg", "decolorize", "retain", "tilt"):
        values = [float(getattr(s, name)) for s in styles]
        assert min(values) < 0.05 < max(values), name
        assert len({round(v, 3) for v in values}) > 30, name
    assert min(s.group_size for s in styles) < 0.3 and max(s.spread for s in styles) > 2.2
    cfg = TrainConfig(images=200)
    drawn = {training_site(cfg, i) for i in range(200)}
    assert drawn <= set(TRAINING_SITES) and not drawn & set(UNSEEN_SITES)
    assert len(UNSEEN_SITES) >= 3 and "site-random" in drawn
    share = sum(training_site(cfg, i) == "site-random" for i in range(200)) / 200
    assert 0.6 <= share <= 0.8
