"""The card leads with the worst never-seen site style, and flags a model that does not travel (from the card)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medcloud.vision.registry import load_dir, resolve, write_card
from medcloud.vision.robustness import MAX_SEEN_GAP, MIN_UNSEEN_MAP50, card_robustness, robustness


def _site(map50: float, seen: bool, verdict: float = 1.0) -> dict[str, object]:
    return {"map50": map50, "seen_in_training": seen, "verdict_accuracy": verdict, "crop_vote_accuracy": verdict}


def test_worst_unseen_site_leads_and_rule_thresholds() -> None:
    good = robustness(
        {"a": _site(0.86, True), "b": _site(0.84, True), "d": _site(0.80, False), "e": _site(0.78, False)}
    )
    head = good["headline"]
    assert head["worst_unseen_site"] == "e" and head["worst_unseen_map50"] == 0.78
    assert head["seen_mean_map50"] == 0.85 and head["seen_minus_worst_unseen"] == pytest.approx(0.07)
    assert good["robustness_warning"] is None and good["robustness_warning_ja"] is None

    # Below the floor, though close to the seen mean.
    low = robustness({"a": _site(0.72, True), "e": _site(MIN_UNSEEN_MAP50 - 0.01, False, 0.7)})
    assert low["robustness_warning"] and "e" in low["robustness_warning"] and "70%" in low["robustness_warning"]
    assert "mAP50 is 0.69" in low["robustness_warning"] and low["robustness_warning_ja"]
    # Above the floor but more than MAX_SEEN_GAP below the seen mean.
    far = robustness({"a": _site(0.98, True), "e": _site(0.98 - MAX_SEEN_GAP - 0.02, False)})
    assert far["robustness_warning"] and far["headline"]["worst_unseen_map50"] > MIN_UNSEEN_MAP50
    # Exactly at the gap is not flagged.
    edge = robustness({"a": _site(0.90, True), "e": _site(0.75, False)})
    assert edge["robustness_warning"] is None


def test_no_unseen_site_is_flagged_as_unmeasured_and_non_detector_metrics_are_ignored() -> None:
    out = robustness({"a": _site(0.9, True)})
    assert out["headline"]["worst_unseen_site"] is None and "unmeasured" in out["robustness_warning"]
    # A federated classifier's per-site metrics have no mAP50: nothing is said about them.
    assert robustness({"site-1": {"accuracy": 0.9}}) == {}
    assert card_robustness({"metrics": {"per_site": {"x": {"accuracy": 1}}}}) == {}
    assert card_robustness({"name": "no-metrics"}) == {}


def test_shipped_card_is_judged_from_its_own_figures() -> None:
    # 0.3.0-synthetic's card predates the rule; its own per-site figures (halogen 0.509) flag it.
    m = resolve(None)
    per_site = m.card["metrics"]["per_site"]
    unseen = {k: v["map50"] for k, v in per_site.items() if not v["seen_in_training"]}
    # Styles of other renderers (bench/vision_ood.py --write-card) count as never-seen sites too.
    for entry in (m.card.get("separate_renderers") or {}).values():
        unseen |= {k: v["map50"] for k, v in entry["per_style"].items() if not v["seen_in_training"]}
    summary = m.summary()
    assert list(summary)[:3] == ["headline", "robustness_warning", "robustness_warning_ja"]
    assert summary["headline"]["worst_unseen_map50"] == min(unseen.values())
    expect_flag = min(unseen.values()) < MIN_UNSEEN_MAP50 or summary["headline"]["seen_minus_worst_unseen"] > 0.15
    assert bool(summary["robustness_warning"]) == expect_flag


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    src = resolve(None).path
    dest = tmp_path / "gram-stain" / "9.9.9-test"
    dest.mkdir(parents=True)
    for f in ("detector.onnx", "classifier.onnx", "training.json"):
        shutil.copyfile(src / f, dest / f)
    return dest


def test_written_card_leads_with_headline_and_flag_follows_the_metrics(model_copy: Path) -> None:
    training = json.loads((model_copy / "training.json").read_text())
    bad = {"per_site": {"site-a": _site(0.9, True), "site-e-halogen": _site(0.4, False, 0.6)}}
    card = write_card(model_copy, "gram-stain", "9.9.9-test", training, bad)
    on_disk = json.loads((model_copy / "card.json").read_text())
    assert list(on_disk)[:5] == ["name", "version", "headline", "robustness_warning", "robustness_warning_ja"]
    assert on_disk["headline"]["worst_unseen_site"] == "site-e-halogen" and card["robustness_warning"]
    assert load_dir(model_copy).summary()["robustness_warning"] == card["robustness_warning"]

    good = {"per_site": {"site-a": _site(0.9, True), "site-e-halogen": _site(0.85, False)}}
    card = write_card(model_copy, "gram-stain", "9.9.9-test", training, good)
    assert card["robustness_warning"] is None
    assert load_dir(model_copy).summary()["robustness_warning"] is None
