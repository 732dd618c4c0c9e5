"""Analysis for the next plan (session 19): Candida-only SYNTHETIC smears at fresh seeds (880,000,000+, apart
from every choose and check set) on a model (default: the shipped one; session 19 ran 0.7.0-synthetic,
session 20 run L, now 0.8.0). Where are the bacterial boxes that give them a bacterial verdict? Prints JSON
per style.

    .venv/bin/python bench/vision_candidates/verdict-yeast/candida_only.py [--model DIR] [--smears 48]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from medcloud.vision.labels import LABELS, NON_BACTERIAL_LABELS, YEAST_LABELS
from medcloud.vision.registry import resolve
from medcloud.vision.runtime import GramStainModel
from medcloud.vision.synth import render_smear

STYLES = {"site-g-lowmag": 0, "site-random": 50_000}  # style -> seed offset


def inside(box: tuple[float, ...], other: tuple[float, ...]) -> float:
    """Share of `box`'s area inside `other`."""
    iw = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    ih = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    return iw * ih / max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--smears", type=int, default=48)
    args = ap.parse_args()
    if args.model is None:
        args.model = resolve(None).path
    model = GramStainModel(args.model, threads=2)
    out = {}
    for style, offset in STYLES.items():
        bacterial_verdicts = yeast_found = touching = half_inside = below_yeast = 0
        best_bacterial: list[float] = []
        labels: Counter[str] = Counter()
        for i in range(args.smears):
            n = int(np.random.default_rng(880_000_000 + i).integers(4, 10))
            smear = render_smear(881_000_000 + offset + i, style, (640, 640), 1.0, species=["candida"] * n)
            pred = model.predict(smear.image)
            yeast = [d for d in pred.detections if d.label in YEAST_LABELS]
            bacteria = [d for d in pred.detections if d.label not in NON_BACTERIAL_LABELS]
            bacterial_verdicts += pred.verdict is not None
            yeast_found += bool(yeast)
            labels.update(LABELS[d.label].code for d in bacteria)
            for b in bacteria:
                share = max((inside(b.box, y.box) for y in yeast), default=0.0)
                touching += share > 0
                half_inside += share >= 0.5
            best = max((d.score for d in bacteria), default=0.0)
            best_bacterial.append(best)
            below_yeast += best < max((d.score for d in yeast), default=0.0)
        out[style] = {
            "smears": args.smears,
            "bacterial_verdicts": bacterial_verdicts,
            "yeast_found": yeast_found,
            "bacterial_boxes": sum(labels.values()),
            "touching_a_yeast_box": touching,
            "half_inside_a_yeast_box": half_inside,
            "best_bacterial_score_p10_p50_p90": np.percentile(best_bacterial, [10, 50, 90]).round(2).tolist(),
            "best_bacterial_below_best_yeast": below_yeast,
            "labels": dict(labels.most_common(6)),
        }
    print(json.dumps({"synthetic": True, "model": str(args.model), "per_style": out}, indent=2))


if __name__ == "__main__":
    main()
