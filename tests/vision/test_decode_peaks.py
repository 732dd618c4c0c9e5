"""`runtime.decode_peaks`: the cells over the threshold, best first, at most `top_k`, then NMS."""

from __future__ import annotations

import numpy as np

from medcloud.vision.runtime import STRIDE, decode_peaks


def _maps(scores: dict[tuple[int, int, int], float], shape: tuple[int, int, int] = (3, 40, 40)):
    heat = np.zeros(shape, np.float32)
    for (c, y, x), s in scores.items():
        heat[c, y, x] = s
    reg = np.zeros((4, *shape[1:]), np.float32)
    reg[2:] = -4.0  # boxes of exp(-4) * STRIDE pixels: no two overlap, so NMS keeps every peak
    return heat, reg


def test_keeps_the_best_top_k_over_the_threshold_best_first() -> None:
    rng = np.random.default_rng(3)
    # 300 distinct places (NMS is class-agnostic: two labels at one place would be one group), random labels.
    places = rng.permutation(40 * 40)[:300]
    labels = rng.integers(0, 3, 300)
    values = rng.permutation(300) / 300 + 0.001
    scores = {(int(c), int(p) // 40, int(p) % 40): float(v) for c, p, v in zip(labels, places, values, strict=True)}
    heat, reg = _maps(scores)
    over = sorted((s for s in scores.values() if s >= 0.3), reverse=True)
    assert len(over) > 100
    got = decode_peaks(heat, reg, score_threshold=0.3, top_k=100)
    assert [d.score for d in got] == [np.float32(s) for s in over[:100]]
    best = max(scores, key=scores.__getitem__)
    c, y, x = best
    assert got[0].label == c and np.allclose(
        got[0].box[:2], (x * STRIDE - np.exp(-4) * STRIDE / 2, y * STRIDE - np.exp(-4) * STRIDE / 2)
    )
    # Fewer than top_k over the threshold: all of them, none below it.
    few = decode_peaks(heat, reg, score_threshold=0.9, top_k=100)
    assert [d.score for d in few] == [
        np.float32(s) for s in sorted((s for s in scores.values() if s >= 0.9), reverse=True)
    ]
    assert decode_peaks(np.zeros((3, 8, 8), np.float32), np.zeros((4, 8, 8), np.float32), 0.05) == []


def test_equal_scores_come_in_map_order() -> None:
    heat, reg = _maps({(1, 5, 9): 0.5, (0, 20, 3): 0.5, (2, 2, 2): 0.7, (0, 1, 1): 0.5})
    got = decode_peaks(heat, reg, score_threshold=0.1)
    assert [d.label for d in got] == [2, 0, 0, 1]  # 0.7 first, then the 0.5s by their place in the (C, h, w) map
    assert [round(d.box[0] / STRIDE) for d in got[1:]] == [1, 3, 9]
