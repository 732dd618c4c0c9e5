"""Leave-one-style-out evaluation: unseen styles come from the model's own training record, the result leads
with the worst of them, Candida smears count in the verdict, box conventions are matched, and the CLI never
overwrites a model's card unless asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medcloud.errors import InvalidInput
from medcloud.vision.evaluate import evaluate_model, match_conventions, model_box_convention, verdict_correct
from medcloud.vision.labels import LABEL_INDEX
from medcloud.vision.metrics import DetectionAccumulator
from medcloud.vision.registry import resolve
from medcloud.vision.runtime import Prediction


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """The shipped model's files in a folder of our own, trained (says its record) on site-b and site-c only."""
    src = resolve(None).path
    dest = tmp_path / "model"
    dest.mkdir()
    for f in ("detector.onnx", "classifier.onnx", "card.json"):
        shutil.copyfile(src / f, dest / f)
    training = json.loads((src / "training.json").read_text())
    training["sites"] = ["site-b", "site-c"]  # site-a left out: it must be scored as never seen
    (dest / "training.json").write_text(json.dumps(training))
    return dest


def test_left_out_style_is_unseen_and_leads(model_copy: Path) -> None:
    out = evaluate_model(model_copy, images_per_site=1, verdict_images_per_site=2, sites=("site-a", "site-b"))
    assert list(out)[:3] == ["headline", "robustness_warning", "robustness_warning_ja"]
    assert out["per_site"]["site-a"]["seen_in_training"] is False
    assert out["per_site"]["site-b"]["seen_in_training"] is True
    assert out["headline"]["worst_unseen_site"] == "site-a" and out["headline"]["unseen_sites"] == ["site-a"]
    assert out["map50_sites"].endswith("site-b")
    site = out["per_site"]["site-a"]
    # The verdict split starts with a Candida-only smear, scored on the yeast answer.
    assert site["candida_images"] == 1 and site["crop_vote_images"] == 2 and site["mixed_yeast_images"] == 1
    assert site["verdict_accuracy"] == site["crop_vote_accuracy"]
    assert out["box_convention"] == {"truth": "group", "model": "group", "matched_as": "group"}


def test_verdict_rule_for_candida_and_bacteria() -> None:
    yeast = {"code": "yeast", "en": "yeast seen (Candida)", "ja": "酵母様真菌 (カンジダ)", "count": 2, "score": 0.8}
    assert verdict_correct(Prediction([], {}, None, 1, 1, 0.0, yeast), "candida")
    assert not verdict_correct(Prediction([], {}, "gp_cocci", 1, 1, 0.0, yeast), "candida")  # bacterial verdict
    assert not verdict_correct(Prediction([], {}, None, 1, 1, 0.0), "candida")  # yeast not reported
    assert verdict_correct(Prediction([], {}, "gp_cocci", 1, 1, 0.0), "s_aureus")
    assert not verdict_correct(Prediction([], {}, "gp_rods", 1, 1, 0.0), "s_aureus")


def _ap(pred: tuple[np.ndarray, np.ndarray, np.ndarray], truth: tuple[np.ndarray, np.ndarray]) -> float:
    acc = DetectionAccumulator(num_classes=17)
    acc.add(*pred, *truth)
    return acc.mean_ap()


def test_box_conventions_are_matched_as_groups() -> None:
    c = LABEL_INDEX["s_aureus"]
    cells = np.array([[0, 0, 10, 10], [9, 0, 19, 10], [0, 9, 10, 19], [9, 9, 19, 19]], dtype=np.float32)
    group = np.array([[0, 0, 19, 19]], dtype=np.float32)
    cell_pred = (cells, np.full(4, c), np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32))
    group_pred = (group, np.array([c]), np.array([0.9], dtype=np.float32))
    cell_truth = (cells, np.full(4, c))
    group_truth = (group, np.array([c]))
    # Scored as is, a per-cell model against group boxes looks bad: 1 hit, 3 false positives.
    assert _ap(cell_pred, group_truth) < 0.5
    # Merged into group boxes first, it is right.
    assert _ap(*match_conventions(cell_pred, group_truth, "cell", "group")) == 1.0
    # A group model against per-cell truth: the truth is merged.
    assert _ap(group_pred, cell_truth) < 0.5
    assert _ap(*match_conventions(group_pred, cell_truth, "group", "cell")) == 1.0
    # Same convention: nothing is merged.
    assert _ap(*match_conventions(cell_pred, cell_truth, "cell", "cell")) == 1.0


def test_model_convention_from_training_record_and_bad_options(model_copy: Path) -> None:
    assert model_box_convention(model_copy) == "group"
    training = json.loads((model_copy / "training.json").read_text())
    (model_copy / "training.json").write_text(json.dumps(training | {"box_convention": "cell"}))
    assert model_box_convention(model_copy) == "cell"
    with pytest.raises(InvalidInput, match="box convention"):
        evaluate_model(model_copy, truth_boxes="cells")
    with pytest.raises(InvalidInput, match="unknown site"):
        evaluate_model(model_copy, sites=("site-zz",))


def test_cli_writes_out_file_and_touches_the_card_only_when_asked(
    model_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medcloud.vision.cli import app

    card_before = (model_copy / "card.json").read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = ["evaluate", "--model", str(model_copy), "--images", "1", "--verdict-images", "1", "--sites", "site-a"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (model_copy / "card.json").read_bytes() == card_before, "evaluate must not overwrite the card"
    (written,) = work.glob("evaluation-gram-stain-*.json")
    report = json.loads(written.read_text())
    assert report["model"]["card_written"] is False and report["headline"]["worst_unseen_site"] == "site-a"
    summary = json.loads(r.output)
    assert next(iter(summary)) == "worst_unseen_site" and summary["card_written"] is None

    # --out into the model's card is refused; --write-card is the explicit way.
    r = CliRunner().invoke(app, [*args, "--out", str(model_copy / "card.json")])
    assert r.exit_code != 0 and (model_copy / "card.json").read_bytes() == card_before
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "e.json"), "--write-card", "--version", "9.9.9"])
    assert r.exit_code == 0, r.output
    card = json.loads((model_copy / "card.json").read_text())
    assert list(card)[:3] == ["name", "version", "headline"] and card["version"] == "9.9.9"
    assert card["headline"]["worst_unseen_site"] == "site-a" and (tmp_path / "e.json").is_file()


# ---- a laboratory's own annotated photos (`evaluate --folder`) ----


def _lab_folder(tmp_path: Path, species: list[list[str]], site: str = "site-e-halogen") -> tuple[Path, list]:
    """SYNTHETIC photos written as a lab's annotation tool would (COCO + VoTT + YOLO), and the smears."""
    from medcloud.vision.annotations import AnnotatedImage, to_coco, to_vott
    from medcloud.vision.labels import LABEL_CODES
    from medcloud.vision.synth import render_smear, save_png

    folder = tmp_path / "our-lab"
    folder.mkdir()
    smears, anns = [], []
    for i, sp in enumerate(species):
        s = render_smear(610_000_000 + i, site, (480, 640), 1.0, species=sp or None)
        name = f"photo-{i:02d}.png"
        save_png(s, str(folder / name))
        boxes = [(float(a), float(b), float(c), float(d)) for a, b, c, d in s.boxes]
        anns.append(AnnotatedImage(name, 640, 480, boxes, [LABEL_CODES[int(k)] for k in s.labels], synthetic=True))
        smears.append(s)
    (folder / "coco.json").write_text(json.dumps(to_coco(anns)))
    (folder / "vott-export.json").write_text(json.dumps(to_vott(anns)))
    return folder, smears


def test_folder_is_scored_as_the_runtime_scores_the_same_photos(tmp_path: Path, model_copy: Path) -> None:
    from medcloud.vision.evaluate import _as_arrays, evaluate_folder
    from medcloud.vision.labels import NUM_CLASSES
    from medcloud.vision.runtime import GramStainModel

    species = [
        ["s_aureus"] * 5,
        ["candida"] * 3,
        ["enterobacterales"] * 4 + ["candida"] * 2,
        [],
        ["s_aureus", "haemophilus"] * 2,
    ]
    folder, smears = _lab_folder(tmp_path, species)
    site = evaluate_folder(model_copy, folder, fmt="coco", threads=1)
    model = GramStainModel(model_copy, threads=1)
    acc = DetectionAccumulator(NUM_CLASSES)
    for s in smears:
        acc.add(*_as_arrays(model.predict(s.image, score_threshold=0.05)), s.boxes, s.labels)
    assert site["map50"] == acc.mean_ap() and site["mean_recall"] == acc.mean_recall()
    assert site["images"] == 5 and site["seen_in_training"] is False and site["synthetic"] is True
    # Photo 0 asks for GP cocci, photo 1 for the yeast answer; photo 2 is bacteria with yeast (both needed);
    # photo 3 is random species; photo 4 mixes Gram groups and asks nothing.
    assert site["candida_images"] == 1 and site["mixed_yeast_images"] == 1
    assert site["verdict_images"] in (2, 3)  # photo 3's random species may or may not be one Gram group
    # The VoTT file of the same folder gives the same figures.
    assert evaluate_folder(model_copy, folder, fmt="vott", threads=1)["map50"] == site["map50"]


def test_folder_verdict_truth() -> None:
    from medcloud.vision.evaluate import folder_verdict_truth

    assert folder_verdict_truth(["rbc", "s_aureus", "cns", "rbc"]) == "s_aureus"  # both GP cocci
    assert folder_verdict_truth(["candida", "rbc"]) == "candida"
    assert folder_verdict_truth(["enterobacterales", "candida"]) == "enterobacterales"
    assert folder_verdict_truth(["s_aureus", "enterobacterales"]) is None  # two Gram groups
    assert folder_verdict_truth(["rbc"]) is None and folder_verdict_truth([]) is None


def test_a_folder_with_problems_is_refused_before_any_photo_is_read(tmp_path: Path, model_copy: Path) -> None:
    from medcloud.vision.evaluate import evaluate_folder

    folder, _ = _lab_folder(tmp_path, [["s_aureus"] * 3])
    doc = json.loads((folder / "coco.json").read_text())
    doc["images"][0]["file_name"] = "../../etc/passwd"
    (folder / "coco.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="problem"):
        evaluate_folder(model_copy, folder, fmt="coco")
    doc["images"][0]["file_name"] = "photo-00.png"
    doc["categories"][0]["name"] = "Mycobacterium"  # not a label this model knows
    (folder / "coco.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="annotations check"):
        evaluate_folder(model_copy, folder, fmt="coco")


def test_a_photo_annotated_in_another_size_is_left_out_and_named(tmp_path: Path, model_copy: Path) -> None:
    from PIL import Image

    from medcloud.vision.evaluate import evaluate_folder

    folder, smears = _lab_folder(tmp_path, [["s_aureus"] * 3, ["cns"] * 3])
    # Photo 1 saved turned, with an EXIF tag that turns it upright again: 480 x 640 upright, annotated 640 x 480.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smears[1].image).save(folder / "photo-01.png", exif=exif.tobytes())
    site = evaluate_folder(model_copy, folder, fmt="coco", threads=1)
    assert site["images"] == 1 and [s["file"] for s in site["skipped"]] == ["photo-01.png"]
    assert "480x640" in site["skipped"][0]["reason"]


def test_cli_folder_site_leads_the_headline_and_warning(tmp_path: Path, model_copy: Path) -> None:
    from medcloud.vision.cli import app

    folder, _ = _lab_folder(tmp_path, [["s_aureus"] * 4, ["candida"] * 3], site="site-f-paleblue")
    out = tmp_path / "lab.json"
    args = ["evaluate", "--model", str(model_copy), "--sites", "none", "--folder", str(folder)]
    r = CliRunner().invoke(app, [*args, "--folder-format", "coco", "--threads", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert list(report["per_site"]) == ["lab-our-lab"]
    assert report["headline"]["worst_unseen_site"] == "lab-our-lab"
    assert (report["robustness_warning"] is None) == (report["per_site"]["lab-our-lab"]["map50"] >= 0.70)
    refused = CliRunner().invoke(app, [*args, "--write-card", "--out", str(tmp_path / "x.json")])
    assert refused.exit_code != 0 and "--sites none" in str(refused.exception or refused.output)
    several = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "z.json")])  # COCO and VoTT both there
    assert several.exit_code != 0 and "--folder-format FORMAT" in str(several.exception)
    named = CliRunner().invoke(app, [*args, "--site-name", "site-a", "--out", str(tmp_path / "y.json")])
    assert named.exit_code != 0 and not (tmp_path / "y.json").exists()


def test_with_site_judges_the_headline_again() -> None:
    from medcloud.vision.evaluate import with_site

    metrics = {"per_site": {"site-a": {"seen_in_training": True, "map50": 0.9, "verdict_accuracy": 1.0}}}
    out = with_site(metrics, "lab-x", {"seen_in_training": False, "map50": 0.31, "verdict_accuracy": 0.5})
    assert out["headline"]["worst_unseen_site"] == "lab-x" and "lab-x" in out["robustness_warning"]
    assert "lab-x" in out["robustness_warning_ja"] and metrics["per_site"].keys() == {"site-a"}
    fine = with_site(metrics, "lab-y", {"seen_in_training": False, "map50": 0.88, "verdict_accuracy": 1.0})
    assert fine["robustness_warning"] is None
