"""The SYNTHETIC smear generator: exact boxes, every label drawable, site styles differ, metadata says synthetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from medcloud.vision.labels import LABEL_CODES, LABELS, NUM_CLASSES
from medcloud.vision.synth import MORPHOLOGY, SITES, UNSEEN_SITES, render_smear, save_png


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
