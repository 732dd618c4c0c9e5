"""bench/vision_ood.py: the separately written SYNTHETIC renderer draws what its labels say, stays apart from
training, and its scorer runs end to end at its smallest."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import vision_ood  # noqa: E402
from medcloud.vision.labels import LABEL_INDEX  # noqa: E402


@pytest.mark.parametrize("style", vision_ood.STYLES)
def test_every_box_holds_stain_and_the_background_holds_little(style: str) -> None:
    smear = vision_ood.render(123, style, species=["s_aureus"] * 3 + ["enterobacterales"] * 3 + ["candida"])
    img = smear.image.astype(np.float32)
    assert img.shape == (640, 640, 3) and smear.image.dtype == np.uint8
    assert len(smear.boxes) == len(smear.labels) >= 5
    darkness = 255 - img.mean(axis=2)
    inside = np.zeros(darkness.shape, dtype=bool)
    for x0, y0, x1, y1 in smear.boxes.astype(int):
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 640
        box = darkness[y0 : y1 + 1, x0 : x1 + 1]
        assert box.max() > np.percentile(darkness, 50) + 15, "a labelled group with no stain in its box"
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
    assert inside.any() and not inside.all()


def test_proportions_are_textbook_and_magnification_scales_them() -> None:
    """A red cell is 7.5 um and a staphylococcus cluster a few um across, whatever the magnification."""
    rbc, aureus = LABEL_INDEX["rbc"], LABEL_INDEX["s_aureus"]
    for seed in range(5):
        smear = vision_ood.render(seed, "ood-1x", species=["s_aureus"] * 2)
        ppu = smear.style.px_per_um
        for box, label in zip(smear.boxes, smear.labels, strict=True):
            w = max(box[2] - box[0], box[3] - box[1]) / ppu
            if label == rbc and min(box[0], box[1]) > 0 and max(box[2], box[3]) < 640:
                assert 6.5 < w < 8.5
            if label == aureus:
                assert 1.5 < w < 9


def test_the_renderer_is_deterministic_and_the_held_out_one_never_reaches_training() -> None:
    a, b = vision_ood.render(7, "ood-varied"), vision_ood.render(7, "ood-varied")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    with pytest.raises(ValueError, match="unknown style"):
        vision_ood.render(7, "site-a")
    for path in (ROOT / "src").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {"vision_blind", "vision_ood"} & names, f"{path} imports an evaluation-only module"
        if path.name == "synth.py":  # the two training renderers share no drawing code
            assert not any("synth_vector" in (n or "") for n in names)


def test_scorer_runs_and_reports_both_styles(tmp_path: Path) -> None:
    argv = [sys.executable, str(ROOT / "bench" / "vision_ood.py"), "--images", "2", "--verdict-images", "2"]
    argv += ["--threads", "1", "--save-examples", str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["synthetic"] is True and set(out["per_renderer"]) == {"ood"}
    assert set(out["per_renderer"]["ood"]) == set(vision_ood.STYLES)
    for per_model in out["per_renderer"]["ood"].values():
        (figures,) = per_model.values()
        assert 0.0 <= figures["map50"] <= 1.0 and 0.0 <= figures["verdict_accuracy"] <= 1.0
        assert set(figures["per_label_ap50"]) == set(LABEL_INDEX)
    assert len(list(tmp_path.glob("*.png"))) == 4 * len(vision_ood.STYLES)


@pytest.mark.parametrize("vector_share", [0.0, 0.1])
def test_write_card_adds_its_section_and_the_headline_counts_its_styles(tmp_path: Path, vector_share: float) -> None:
    """synth_vector's styles count as never seen only for a model that never trained on them (its
    training.json's vector_share); the shipped model's own share is replaced by each case in turn."""
    import shutil

    from medcloud.vision.registry import resolve

    model = tmp_path / "0.9.0-synthetic"
    shutil.copytree(resolve(None).path, model)
    record = json.loads((model / "training.json").read_text())
    (model / "training.json").write_text(json.dumps({**record, "vector_share": vector_share}))
    before = json.loads((model / "card.json").read_text())
    argv = [sys.executable, str(ROOT / "bench" / "vision_ood.py"), "--model", str(model), "--images", "2"]
    argv += ["--verdict-images", "2", "--threads", "1", "--write-card"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["card_sections_written"][0] == "separate_renderers"
    card = json.loads((model / "card.json").read_text())
    names = {s + vision_ood.CARD_SUFFIX for s in vision_ood.STYLES}
    section = card["separate_renderers"]["ood"]
    assert set(section["per_style"]) == set(vision_ood.STYLES) and "{MODEL}" in section["command"]
    seen = vector_share > 0
    assert all(v["seen_in_training"] is seen for v in section["per_style"].values())
    unseen = set(card["headline"]["unseen_sites"])
    assert names <= unseen if not seen else not names & unseen
    # the never-seen sites are the card's own, less synth_vector's styles when the model trained on them
    assert set(before["headline"]["unseen_sites"]) - names <= unseen
    new = [] if seen else [v["map50"] for v in section["per_style"].values()]
    others = [v["map50"] for k, v in card["metrics"]["per_site"].items() if not v["seen_in_training"]]
    others += [
        v["map50"]
        for r, entry in card["separate_renderers"].items()
        if r != "ood"
        for v in entry["per_style"].values()
        if not v["seen_in_training"]
    ]
    assert card["headline"]["worst_unseen_map50"] == round(min([*others, *new]), 4)
    assert {k: v for k, v in card.items() if k not in ("separate_renderers", "headline") and "warning" not in k} == {
        k: v for k, v in before.items() if k not in ("separate_renderers", "headline") and "warning" not in k
    }
    # another renderer's entry already on the card is kept (the shipped card carries the blind renderer's)
    for name, entry in (before.get("separate_renderers") or {}).items():
        if name != "ood":
            assert card["separate_renderers"][name] == entry
    # a card whose weights no longer match is refused, not rewritten
    (model / "detector.onnx").write_bytes(b"not the model")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode != 0 and "does not match" in done.stderr and "Traceback" not in done.stderr
