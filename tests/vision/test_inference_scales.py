"""Multi-scale inference (issue 13): the detector run at several long sides, boxes merged by class-wise NMS,
the Gram verdict unchanged; only for a model whose training record asks for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medcloud.errors import InvalidInput
from medcloud.vision.metrics import iou_matrix
from medcloud.vision.registry import resolve
from medcloud.vision.runtime import (
    INPUT_LONG_SIDE,
    Detection,
    GramStainModel,
    InferenceScales,
    combine_scales,
    inference_scales,
    merge_classwise,
    prepare,
    prepare_scales,
)
from medcloud.vision.synth import render_smear


def test_merge_keeps_each_label_apart_and_drops_same_label_duplicates() -> None:
    dets = [
        Detection((10, 10, 50, 50), 3, 0.6),
        Detection((12, 11, 51, 50), 3, 0.9),  # the same group seen at another scale, higher score
        Detection((11, 10, 50, 49), 5, 0.4),  # the same place, another label: kept (class-wise)
        Detection((100, 100, 130, 130), 3, 0.5),  # elsewhere: kept
    ]
    out = merge_classwise(dets, iou=0.5)
    assert [(d.label, d.score) for d in out] == [(3, 0.9), (3, 0.5), (5, 0.4)]
    assert merge_classwise([], 0.5) == []


def test_combine_keeps_the_base_answer_and_adds_what_other_scales_saw() -> None:
    base = [Detection((10, 10, 50, 50), 3, 0.5)]
    small = [
        Detection((11, 10, 50, 50), 5, 0.8),  # the same group read as another label, more confidently
        Detection((12, 11, 51, 51), 3, 0.7),  # the same label again: a duplicate of the base box
        Detection((200, 200, 230, 230), 7, 0.3),  # a group the base scale missed
    ]
    primary, alternatives = combine_scales({320: base, 192: small}, base=320)
    assert [(d.label, d.score) for d in primary] == [(3, 0.5), (7, 0.3)]  # the base box keeps its label
    assert [(d.label, d.score) for d in alternatives] == [(5, 0.8)]
    assert combine_scales({320: [], 192: []}, base=320) == ([], [])
    _, weighted = combine_scales({320: base, 192: small}, base=320, weight=0.5)
    assert [(d.label, d.score) for d in weighted] == [(5, 0.4)]  # ranked below answers of equal confidence


def test_prepare_scales_base_is_prepare_and_other_sides_have_their_size() -> None:
    img = render_smear(11, "site-e-halogen", (480, 640), 0.75).image
    out = prepare_scales(img, (192, 320, 416), colour="white-balance")
    x, scale = prepare(img, colour="white-balance")
    assert np.array_equal(out[320][0], x) and out[320][1] == scale  # the single-scale input, to the bit
    for side in (192, 416):
        xs, s = out[side]
        assert s == pytest.approx(side / 640)
        assert xs.shape == (1, 3, -(-round(480 * s) // 16) * 16, -(-side // 16) * 16)
        assert xs.min() >= 0 and xs.max() <= 255
    # The white-balance gain is the base image's for every side: the background comes out alike.
    assert abs(float(np.median(out[416][0])) - float(np.median(x))) < 4


def test_larger_sides_resized_on_another_thread_are_the_same_pixels() -> None:
    """Sides above the base are resized beside it on a pool thread: the result is what one thread gives."""
    img = render_smear(12, "site-a", (640, 640), 1.0).image
    for _ in range(3):  # the pool is reused from call to call
        out = prepare_scales(img, (320, 480), colour="none")
        assert np.array_equal(out[480][0], prepare(img, 480, colour="none")[0])
        assert np.array_equal(out[320][0], prepare(img, 320, colour="none")[0])


def _copy(tmp_path: Path, inference: dict[str, object] | None) -> Path:
    src = resolve(None).path
    dest = tmp_path / "model"
    dest.mkdir(parents=True)
    for f in ("detector.onnx", "classifier.onnx", "card.json"):
        shutil.copyfile(src / f, dest / f)
    training = json.loads((src / "training.json").read_text())
    training.pop("inference", None)
    if inference is not None:
        training["inference"] = inference
    (dest / "training.json").write_text(json.dumps(training))
    return dest


def test_recipe_comes_from_the_training_record_and_older_models_stay_single_scale(tmp_path: Path) -> None:
    old = _copy(tmp_path / "a", None)
    assert inference_scales(old) == InferenceScales() and InferenceScales().sides == (INPUT_LONG_SIDE,)
    new = _copy(tmp_path / "b", {"sides": [192, 320, 416], "iou": 0.5, "verdict_side": 320})
    assert inference_scales(new) == InferenceScales((192, 320, 416), 0.5, 320)
    bad = _copy(tmp_path / "c", {"sides": [192, 416], "verdict_side": 320})
    with pytest.raises(InvalidInput, match="verdict side"):
        inference_scales(bad)
    for sides in ((), (16,), (320, 320)):
        with pytest.raises(InvalidInput):
            InferenceScales(sides)
    with pytest.raises(InvalidInput):
        InferenceScales((320,), iou=0.0)
    with pytest.raises(InvalidInput):
        InferenceScales((320,), alternative_weight=1.5)


# The first recipe measured for issue 13 (docs/vision.md "Multi-scale inference"); never shipped.
MEASURED = InferenceScales((192, 320, 416), 0.5, 320, 0.5)
# What 0.6.1, 0.7.0 and 0.8.0-synthetic ship (session 14, chosen by a rule written before scoring; docs/vision.md).
SHIPPED = InferenceScales((320, 480), 0.5, 320, 0.5)


def test_shipped_model_runs_its_recorded_recipe(packaged_model_dir: Path) -> None:
    """The shipped model runs the detector at 320 and 480; the answer and the verdict's detector half stay 320's."""
    record = json.loads((packaged_model_dir / "training.json").read_text())
    assert record["inference"]["sides"] == [320, 480] and "rule written before scoring" in record["inference_chosen"]
    model = GramStainModel(packaged_model_dir, threads=1)
    assert model.scales == SHIPPED and model.decode_side == 960
    # The card records the recipe its serving figures were measured with.
    card = json.loads((packaged_model_dir / "card.json").read_text())
    assert card["serving"]["inference"]["sides"] == [320, 480]


def test_shipped_recipe_keeps_the_single_scale_verdict(packaged_model_dir: Path) -> None:
    single = GramStainModel(packaged_model_dir, threads=1, scales=InferenceScales())
    shipped = GramStainModel(packaged_model_dir, threads=1)
    for seed, site in ((7_001, "site-a"), (7_002, "site-f-paleblue"), (7_003, "site-g-lowmag")):
        img = render_smear(seed, site, (640, 640), 1.0).image
        a, b = single.predict(img), shipped.predict(img)
        assert (a.verdict, a.yeast, a.crop_votes) == (b.verdict, b.yeast, b.crop_votes)
        # The 320 answers are all kept; the 480 run only adds groups they missed.
        assert all(
            any((e.box, e.label, e.score) == (f.box, f.label, f.score) for f in b.detections) for e in a.detections
        )


@pytest.mark.parametrize("site", ["site-g-lowmag", "site-f-paleblue", "site-a"])
def test_multi_scale_adds_boxes_and_keeps_the_verdict(packaged_model_dir: Path, site: str) -> None:
    multi = GramStainModel(packaged_model_dir, threads=1, scales=MEASURED)
    single = GramStainModel(packaged_model_dir, threads=1, scales=InferenceScales())
    img = render_smear(123_456, site, (640, 640), 1.0).image
    a, b = single.predict(img, 0.05), multi.predict(img, 0.05)
    # The verdict, the yeast note and the crop votes come from the 320 run in both.
    assert (a.verdict, a.yeast, a.crop_votes, a.excluded_crops) == (b.verdict, b.yeast, b.crop_votes, b.excluded_crops)
    assert a.alternatives == [] and a.ranked() == a.detections  # single scale: as before
    # Every single-scale box survives in the ranked output or is covered by a same-label box of at least its score.
    ranked = b.ranked()
    pb = np.array([d.box for d in ranked], dtype=np.float32)
    for d in a.detections:
        ious = iou_matrix(np.array([d.box], dtype=np.float32), pb)[0]
        assert any(ious[j] > 0.5 and e.label == d.label and e.score >= d.score for j, e in enumerate(ranked))
    assert len(ranked) > len(a.detections)
    assert [d.score for d in ranked] == sorted((d.score for d in ranked), reverse=True)
    # What is drawn and counted: the single-scale answer, plus groups only another scale saw, one label each.
    assert all(
        any(e is f or (e.box, e.label, e.score) == (f.box, f.label, f.score) for f in b.detections)
        for e in a.detections
    )
    prim = np.array([d.box for d in b.detections], dtype=np.float32)
    over = iou_matrix(prim, prim)
    assert not any(over[i, j] > 0.6 for i in range(len(prim)) for j in range(i + 1, len(prim)))
    assert sum(b.counts().values()) == len(b.detections)
    h, w = img.shape[:2]
    assert all(0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h for d in ranked)
    js = b.to_json("v")
    assert len(js["detections"]) == len(b.detections) and len(js["alternatives"]) == len(b.alternatives)
