"""bench/vision_blind.py: the independent (blind) synthetic smear renderer used only for evaluation.

Checks determinism, the output contract (shapes, dtypes, boxes inside the image and over real stain),
that requested organism groups are drawn exactly, that Gram colours and relative sizes are sensible, and
that bad arguments are refused."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import vision_blind as vb  # noqa: E402
from medcloud.vision.labels import LABEL_CODES, LABEL_INDEX, LABELS  # noqa: E402


def _grey(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32).mean(axis=2)


def _check_contract(sm: vb.BlindSmear, size: int) -> None:
    assert sm.image.dtype == np.uint8 and sm.image.shape == (size, size, 3)
    assert sm.boxes.dtype == np.float32 and sm.boxes.ndim == 2 and sm.boxes.shape[1] == 4
    assert sm.labels.dtype == np.int64 and sm.labels.shape == (len(sm.boxes),)
    assert np.all((sm.labels >= 0) & (sm.labels < len(LABELS)))
    if len(sm.boxes):
        assert np.all(sm.boxes >= 0) and np.all(sm.boxes <= size)
        assert np.all(sm.boxes[:, 2] > sm.boxes[:, 0]) and np.all(sm.boxes[:, 3] > sm.boxes[:, 1])


def test_styles_are_named_blind() -> None:
    assert 2 <= len(vb.STYLES) <= 3
    assert all(s.startswith("blind-") for s in vb.STYLES)


@pytest.mark.parametrize("style", vb.STYLES)
def test_each_style_renders_and_boxes_sit_on_stain(style: str) -> None:
    for seed in range(3):
        sm = vb.render(seed, style)
        _check_contract(sm, 640)
        assert sm.style["name"] == style
        grey = _grey(sm.image)
        background = float(np.median(grey))
        assert background > 120, "the field should be a bright transmitted-light background"
        for box in sm.boxes:
            x0, y0, x1, y1 = (int(v) for v in (np.floor(box[0]), np.floor(box[1]), np.ceil(box[2]), np.ceil(box[3])))
            patch = grey[y0:y1, x0:x1]
            assert patch.size > 0
            assert float(patch.min()) < background - 10, f"box {box} holds no stain darker than the background"


def test_deterministic_per_seed_and_varies_between_seeds() -> None:
    a = vb.render(11, "blind-field")
    b = vb.render(11, "blind-field")
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
    c = vb.render(12, "blind-field")
    assert not np.array_equal(a.image, c.image)


def test_other_sizes() -> None:
    sm = vb.render(3, "blind-phone", size=320)
    _check_contract(sm, 320)


def test_requested_species_are_drawn_exactly() -> None:
    for i, code in enumerate(LABEL_CODES):
        style = vb.STYLES[i % len(vb.STYLES)]
        sm = vb.render(100 + i, style, size=480, species=[code, code])
        _check_contract(sm, 480)
        counts = Counter(LABEL_CODES[int(k)] for k in sm.labels)
        assert counts[code] >= 2, (code, counts)
        organisms = {c: n for c, n in counts.items() if c != "rbc"}
        if code != "rbc":
            assert organisms == {code: 2}, (code, counts)
        else:
            assert organisms == {}


def test_mixed_species_list_with_repeats() -> None:
    want = ["s_aureus", "s_aureus", "enterobacterales", "candida"]
    sm = vb.render(5, "blind-clean", species=want)
    counts = Counter(LABEL_CODES[int(k)] for k in sm.labels)
    assert counts["s_aureus"] == 2 and counts["enterobacterales"] == 1 and counts["candida"] == 1


def test_random_fields_look_like_smears() -> None:
    with_rbc = with_organism = 0
    for seed in range(12):
        sm = vb.render(seed, vb.STYLES[seed % len(vb.STYLES)], size=480)
        codes = {LABEL_CODES[int(k)] for k in sm.labels}
        with_rbc += "rbc" in codes
        with_organism += bool(codes - {"rbc"})
    assert with_rbc >= 3, "red cells should appear in many smears"
    assert with_organism >= 9, "most fields should show organisms"


def _dark_rgb(sm: vb.BlindSmear, label: int) -> np.ndarray:
    """Mean RGB of the darkest fifth of the pixels inside the boxes of one label."""
    grey = _grey(sm.image)
    px = []
    for box, lab in zip(sm.boxes, sm.labels, strict=True):
        if lab != label:
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        g = grey[y0 : y1 + 1, x0 : x1 + 1].ravel()
        rgb = sm.image[y0 : y1 + 1, x0 : x1 + 1].reshape(-1, 3).astype(np.float32)
        px.append(rgb[g <= np.quantile(g, 0.2)])
    return np.concatenate(px).mean(axis=0)


def test_gram_positive_is_violet_and_gram_negative_is_pink() -> None:
    gp = vb.render(21, "blind-clean", species=["s_aureus"] * 3)
    r, _, b = _dark_rgb(gp, LABEL_INDEX["s_aureus"])
    assert b > r + 15, "crystal violet should leave Gram-positive cells blue-violet"
    gn = vb.render(21, "blind-clean", species=["enterobacterales"] * 3)
    r, g, b = _dark_rgb(gn, LABEL_INDEX["enterobacterales"])
    assert r > b + 15 and r > g + 40, "safranin should leave Gram-negative cells pink-red"


def test_relative_sizes() -> None:
    sm = vb.render(8, "blind-clean", species=["gn_cocci", "gn_cocci", "s_pneumoniae", "candida", "rbc"])
    area = {}
    for box, lab in zip(sm.boxes, sm.labels, strict=True):
        area.setdefault(LABEL_CODES[int(lab)], []).append(float((box[2] - box[0]) * (box[3] - box[1])))
    pair = max(area["gn_cocci"])
    assert min(area["rbc"]) > 6 * pair, "a red cell is far larger than a diplococcal pair"
    assert min(area["rbc"]) > max(area["s_pneumoniae"])
    assert max(area["candida"]) > 3 * pair, "a yeast is much larger than a bacterium"


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        vb.render(0, "clean")
    with pytest.raises(ValueError):
        vb.render(0, "blind-clean", species=["e_coli"])


def test_render_speed() -> None:
    vb.render(0, "blind-field")  # warm-up
    t0 = time.perf_counter()
    for seed in range(3):
        vb.render(seed, "blind-field")
    per = (time.perf_counter() - t0) / 3
    assert per < 2.0, f"{per:.2f} s per smear"  # ~0.2 s on an idle core; generous for loaded CI machines
