"""Detection metrics: average precision at IoU 0.5 (VOC all-point interpolation) and recall, per class."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


def iou_matrix(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """Pairwise IoU of boxes [x0, y0, x1, y1]: shape (len(a), len(b))."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    out: NDArray[np.float32] = (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)).astype(np.float32)
    return out


@dataclass
class DetectionAccumulator:
    """Collects per-image predictions and truths, then scores AP50 and recall per class."""

    num_classes: int
    iou_threshold: float = 0.5
    _scores: list[list[float]] = field(default_factory=list)
    _hits: list[list[bool]] = field(default_factory=list)
    _truths: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._scores = [[] for _ in range(self.num_classes)]
        self._hits = [[] for _ in range(self.num_classes)]
        self._truths = [0] * self.num_classes

    def add(
        self,
        pred_boxes: NDArray[np.float32],
        pred_labels: NDArray[np.int64],
        pred_scores: NDArray[np.float32],
        true_boxes: NDArray[np.float32],
        true_labels: NDArray[np.int64],
    ) -> None:
        for c in range(self.num_classes):
            t = true_boxes[true_labels == c]
            self._truths[c] += len(t)
            sel = pred_labels == c
            p, s = pred_boxes[sel], pred_scores[sel]
            order = np.argsort(-s)
            p, s = p[order], s[order]
            ious = iou_matrix(p, t)
            used = np.zeros(len(t), dtype=bool)
            for i in range(len(p)):
                hit = False
                if len(t):
                    cand = np.where(~used, ious[i], -1.0)
                    j = int(np.argmax(cand))
                    if cand[j] >= self.iou_threshold:
                        used[j] = True
                        hit = True
                self._scores[c].append(float(s[i]))
                self._hits[c].append(hit)

    def per_class(self) -> list[dict[str, float | int | None]]:
        """AP50 and recall (at every kept detection) for each class; None where the class never occurs."""
        out: list[dict[str, float | int | None]] = []
        for c in range(self.num_classes):
            n = self._truths[c]
            if n == 0:
                out.append({"ap50": None, "recall": None, "instances": 0})
                continue
            order = np.argsort(-np.array(self._scores[c]))
            hits = np.array(self._hits[c], dtype=bool)[order]
            tp = np.cumsum(hits)
            fp = np.cumsum(~hits)
            recall = tp / n if len(tp) else np.zeros(0)
            precision = tp / np.maximum(tp + fp, 1) if len(tp) else np.zeros(0)
            out.append(
                {
                    "ap50": round(voc_ap(recall, precision), 4),
                    "recall": round(float(recall[-1]) if len(recall) else 0.0, 4),
                    "instances": n,
                }
            )
        return out

    def mean_ap(self) -> float:
        aps = [r["ap50"] for r in self.per_class() if r["ap50"] is not None]
        return round(float(np.mean(aps)), 4) if aps else 0.0

    def mean_recall(self) -> float:
        rs = [r["recall"] for r in self.per_class() if r["recall"] is not None]
        return round(float(np.mean(rs)), 4) if rs else 0.0


def voc_ap(recall: NDArray[np.float64], precision: NDArray[np.float64]) -> float:
    """Area under the precision envelope (all-point interpolation, as PASCAL VOC 2010+ and COCO-style AP50)."""
    if len(recall) == 0:
        return 0.0
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    idx = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))


def merge_touching(
    boxes: NDArray[np.float32],
    labels: NDArray[np.int64],
    scores: NDArray[np.float32] | None = None,
    gap: float | None = None,
    gap_fraction: float = 0.5,
    keep_separate: frozenset[int] = frozenset(),
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
    """Per-cell boxes to per-group boxes: boxes of one label that overlap or touch become their union.

    Two boxes touch when the gap between them is at most `gap` pixels on both axes (default:
    `gap_fraction` of the median shorter side of that label's boxes, so half a cell). Grouping is
    transitive (a chain of touching cocci becomes one box). A group's score is its best member's.
    Labels in `keep_separate` (red cells: one object per cell in both conventions) are left as they are.
    Returns boxes, labels and scores (ones when `scores` is None), sorted by label.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores = np.ones(len(boxes), dtype=np.float32) if scores is None else np.asarray(scores, dtype=np.float32)
    out_b: list[NDArray[np.float32]] = []
    out_l: list[int] = []
    out_s: list[float] = []
    for c in sorted(set(labels.tolist())):
        sel = np.where(labels == c)[0]
        b, s = boxes[sel], scores[sel]
        if c in keep_separate or len(sel) == 1:
            out_b.extend(b)
            out_l.extend([c] * len(sel))
            out_s.extend(s.tolist())
            continue
        g = gap
        if g is None:
            g = gap_fraction * float(np.median(np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])))
        dx = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
        dy = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
        near = (dx >= -g) & (dy >= -g)
        parent = list(range(len(sel)))
        for i, j in zip(*np.nonzero(np.triu(near, 1)), strict=True):
            ri, rj = _root(parent, int(i)), _root(parent, int(j))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
        groups: dict[int, list[int]] = {}
        for i in range(len(sel)):
            groups.setdefault(_root(parent, i), []).append(i)
        for members in groups.values():
            m = b[members]
            out_b.append(np.array([m[:, 0].min(), m[:, 1].min(), m[:, 2].max(), m[:, 3].max()], dtype=np.float32))
            out_l.append(c)
            out_s.append(float(s[members].max()))
    return (
        np.array(out_b, dtype=np.float32).reshape(-1, 4),
        np.array(out_l, dtype=np.int64),
        np.array(out_s, dtype=np.float32),
    )


def _root(parent: list[int], i: int) -> int:
    """Union-find root of `i`, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i
