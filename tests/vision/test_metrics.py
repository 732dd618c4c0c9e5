"""AP50 and recall on hand-made cases whose answers are known."""

from __future__ import annotations

import numpy as np

from medcloud.vision.metrics import DetectionAccumulator, iou_matrix
from medcloud.vision.runtime import crop_vote


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
