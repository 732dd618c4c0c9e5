"""AP50, recall, group-box merging and the yeast-aware crop vote on hand-made cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from medcloud.vision.labels import CROP_CLASSES, LABEL_INDEX
from medcloud.vision.metrics import DetectionAccumulator, iou_matrix
from medcloud.vision.runtime import Detection, Prediction, crop_vote, gram_vote


def test_iou() -> None:
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    assert np.allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])


def test_ap_perfect_missing_and_false_positive() -> None:
    acc = DetectionAccumulator(num_classes=2)
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    labels = np.array([0, 0])
    # One exact hit (score .9), one false positive above it in rank for class 1, one miss.
    acc.add(
        np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32),
        np.array([0, 1]),
        np.array([0.9, 0.95], dtype=np.float32),
        truth,
        labels,
    )
    per = acc.per_class()
    assert per[0]["ap50"] == 0.5 and per[0]["recall"] == 0.5
    assert per[1]["ap50"] is None  # class 1 never occurs: not averaged
    assert acc.mean_ap() == 0.5


def test_ap_ranks_false_positive_before_hit() -> None:
    acc = DetectionAccumulator(num_classes=1)
    truth = np.array([[0, 0, 10, 10]], dtype=np.float32)
    preds = np.array([[40, 40, 50, 50], [0, 0, 10, 10]], dtype=np.float32)
    acc.add(preds, np.array([0, 0]), np.array([0.9, 0.8], dtype=np.float32), truth, np.array([0]))
    assert acc.per_class()[0]["ap50"] == 0.5  # precision 1/2 at recall 1


def test_crop_vote_excludes_background() -> None:
    # 5 background crops, 2 GP cocci, 1 GN rods: the verdict is GP cocci, not background.
    probs = np.zeros((8, 5), dtype=np.float32)
    probs[:5, 4] = 1
    probs[5:7, 2] = 1
    probs[7, 1] = 1
    votes, verdict = crop_vote(probs)
    assert verdict == "gp_cocci" and votes["background"] == 5
    assert crop_vote(probs[:5])[1] is None


def test_merge_touching_builds_group_boxes() -> None:
    from medcloud.vision.metrics import merge_touching

    # Three touching cocci of label 3 (a chain), one far away, two overlapping red cells (label 16) kept apart.
    boxes = np.array(
        [[0, 0, 10, 10], [10, 0, 20, 10], [21, 2, 31, 12], [100, 100, 110, 110], [50, 50, 70, 70], [60, 60, 80, 80]],
        dtype=np.float32,
    )
    labels = np.array([3, 3, 3, 3, 16, 16])
    scores = np.array([0.5, 0.9, 0.4, 0.7, 0.8, 0.6], dtype=np.float32)
    b, lab, s = merge_touching(boxes, labels, scores, keep_separate=frozenset({16}))
    groups = {tuple(float(v) for v in box): (int(k), float(sc)) for box, k, sc in zip(b, lab, s, strict=True)}
    assert groups[(0.0, 0.0, 31.0, 12.0)] == (3, pytest.approx(0.9))  # gap of 1 px < half a cell: one chain
    assert groups[(100.0, 100.0, 110.0, 110.0)][0] == 3
    assert (50.0, 50.0, 70.0, 70.0) in groups and (60.0, 60.0, 80.0, 80.0) in groups
    assert len(b) == 4
    # A gap wider than allowed keeps boxes apart; different labels never merge.
    b, _, _ = merge_touching(boxes[:3], labels[:3], gap=0.0)
    assert len(b) == 2
    b, _, _ = merge_touching(boxes[:2], np.array([3, 5]))
    assert len(b) == 2


def _det(box: tuple[float, float, float, float], code: str, score: float = 0.9) -> Detection:
    return Detection(box, LABEL_INDEX[code], score)


def _crops() -> tuple[np.ndarray, np.ndarray]:
    """Four 64-pixel crops in a row; the classifier calls all of them Gram-positive cocci."""
    boxes = np.array([[x, 0, x + 64, 64] for x in (0, 64, 128, 192)], dtype=np.float32)
    probs = np.zeros((4, 5), dtype=np.float32)
    probs[:, CROP_CLASSES.index("gp_cocci")] = 1
    return boxes, probs


def test_yeast_only_smear_has_no_bacterial_verdict() -> None:
    boxes, probs = _crops()
    dets = [_det((5, 5, 40, 40), "candida"), _det((70, 10, 120, 50), "candida", 0.7), _det((200, 5, 240, 45), "rbc")]
    vote = gram_vote(probs, boxes, dets)
    assert vote.verdict is None, "yeast read as cocci by the classifier must not become a Gram verdict"
    assert vote.yeast is not None and vote.yeast["count"] == 2 and vote.yeast["score"] == 0.9
    assert vote.yeast["en"] == "yeast seen (Candida)" and vote.yeast["ja"] == "酵母様真菌 (カンジダ)"
    assert vote.excluded == 3 and vote.votes["gp_cocci"] == 1  # the yeast and red-cell crops did not vote
    pred = Prediction([], vote.votes, vote.verdict, 256, 64, 1.0, vote.yeast, vote.excluded)
    out = pred.to_json("v")
    assert out["verdict"] is None and out["yeast"]["code"] == "yeast" and out["crop_votes_excluded"] == 3
    assert out["answer"] == {"en": "yeast seen (Candida)", "ja": "酵母様真菌 (カンジダ)"}


def test_bacteria_with_yeast_give_verdict_and_yeast_note() -> None:
    boxes, probs = _crops()
    probs[0] = 0
    probs[0, CROP_CLASSES.index("gn_rods")] = 1  # the yeast crop looks like GN rods: it must not vote
    dets = [_det((5, 5, 40, 40), "candida"), _det((130, 10, 180, 50), "s_aureus"), _det((70, 20, 90, 40), "cns")]
    vote = gram_vote(probs, boxes, dets)
    assert vote.verdict == "gp_cocci" and vote.yeast is not None and vote.excluded == 1
    assert vote.votes["gn_rods"] == 0
    out = Prediction([], vote.votes, vote.verdict, 256, 64, 1.0, vote.yeast, vote.excluded).to_json("v")
    assert out["verdict"]["code"] == "gp_cocci" and out["yeast"] is not None
    assert out["answer"]["en"] == "Gram-positive cocci; yeast seen (Candida)"


def test_yeast_floor_withholds_the_verdict_only_for_weak_bacteria_beside_yeast() -> None:
    boxes, probs = _crops()
    yeast = [_det((5, 5, 40, 40), "candida", 0.8)]
    weak = [*yeast, _det((130, 10, 180, 50), "listeria", 0.33)]
    assert gram_vote(probs, boxes, weak).verdict == "gp_cocci"  # no floor: any bacterial box counts
    vote = gram_vote(probs, boxes, weak, yeast_floor=0.35)
    assert vote.verdict is None and vote.yeast is not None  # the yeast note alone
    strong = [*yeast, _det((130, 10, 180, 50), "s_aureus", 0.36)]
    assert gram_vote(probs, boxes, strong, yeast_floor=0.35).verdict == "gp_cocci"
    # The floor never exceeds the best yeast score: weak yeast does not silence bacteria that beat it.
    faint = [_det((5, 5, 40, 40), "candida", 0.3), _det((130, 10, 180, 50), "s_aureus", 0.31)]
    assert gram_vote(probs, boxes, faint, yeast_floor=0.35).verdict == "gp_cocci"
    # Without yeast the floor does nothing.
    alone = [_det((130, 10, 180, 50), "s_aureus", 0.26)]
    assert gram_vote(probs, boxes, alone, yeast_floor=0.35).verdict == "gp_cocci"
    assert gram_vote(probs, boxes, alone, yeast_ratio=0.8).verdict == "gp_cocci"
    # Relative: bacteria must reach 0.8 x the best yeast score (0.8 x 0.8 = 0.64).
    assert gram_vote(probs, boxes, [*yeast, _det((130, 10, 180, 50), "s_aureus", 0.6)], yeast_ratio=0.8).verdict is None
    assert gram_vote(probs, boxes, [*yeast, _det((130, 10, 180, 50), "s_aureus", 0.65)], yeast_ratio=0.8).verdict == (
        "gp_cocci"
    )


def test_red_cells_only_and_no_detection() -> None:
    boxes, probs = _crops()
    # Red cells only: the detector saw organisms, none a bacterium: no verdict, no yeast.
    vote = gram_vote(probs, boxes, [_det((0, 0, 60, 60), "rbc")])
    assert vote.verdict is None and vote.yeast is None
    # A crop covering a red cell AND a bacterium still votes (bacteria lying on red cells).
    vote = gram_vote(probs, boxes, [_det((0, 0, 60, 60), "rbc"), _det((10, 10, 30, 30), "s_aureus")])
    assert vote.excluded == 0 and vote.verdict == "gp_cocci"
    # Nothing detected: the plain crop vote stands (as before).
    vote = gram_vote(probs, boxes, [])
    assert vote.verdict == "gp_cocci" and vote.yeast is None and vote.excluded == 0


def test_prediction_json_stays_backward_compatible() -> None:
    pred = Prediction([_det((1, 2, 3, 4), "s_aureus")], {"gp_cocci": 3}, "gp_cocci", 10, 10, 2.0)
    out = pred.to_json("v1")
    old_keys = {"model_version", "synthetic_model", "image", "detections", "counts", "crop_votes", "verdict"}
    assert old_keys | {"latency_ms"} <= set(out)
    assert out["verdict"] == {"code": "gp_cocci", "en": "Gram-positive cocci", "ja": "グラム陽性球菌"}
    assert out["yeast"] is None and out["crop_votes_excluded"] == 0


def test_verdict_weighs_the_detector_boxes_with_the_crop_vote() -> None:
    boxes, probs = _crops()
    probs[:] = 0
    probs[:3, CROP_CLASSES.index("gp_rods")] = 1  # tiles of a low-magnification chain read as rods
    probs[3, CROP_CLASSES.index("gp_cocci")] = 1
    chain = [_det((10, 10, 120, 30), "streptococcus", 0.8), _det((130, 10, 250, 30), "streptococcus", 0.6)]
    vote = gram_vote(probs, boxes, chain)
    assert vote.votes["gp_rods"] == 3 and vote.verdict == "gp_cocci"  # 0.5 * 1/4 + 0.5 * 1 against 0.5 * 3/4
    assert vote.detector_votes is not None and vote.detector_votes["gp_cocci"] == 1.4
    assert gram_vote(probs, boxes, chain, detector_weight=0.0).verdict == "gp_rods"  # the crop vote alone
    # Crops unanimous against the detector: an even split, which the crop vote's answer keeps.
    probs[3] = 0
    probs[3, CROP_CLASSES.index("gp_rods")] = 1
    assert gram_vote(probs, boxes, chain).verdict == "gp_rods"
    # Boxes of two groups count by their scores: one confident GN rod outweighs two faint GP cocci.
    probs[:] = 0
    probs[:2, CROP_CLASSES.index("gn_rods")] = 1
    probs[2:, CROP_CLASSES.index("gp_cocci")] = 1
    dets = [_det((0, 0, 20, 20), "enterobacterales", 0.9), _det((150, 0, 170, 20), "cns", 0.3)]
    dets.append(_det((200, 0, 220, 20), "cns", 0.3))
    assert gram_vote(probs, boxes, dets).verdict == "gn_rods"
