"""Gram verdict: crop vote alone against crop vote + detector boxes, side by side on the same SYNTHETIC smears.

Each smear is run once through the shipped model (detector and crop classifier); `runtime.gram_vote` then
scores the recorded outputs with each detector weight, so every rule sees identical inputs. Smears are
monomicrobial (all 16 organisms in turn, Candida's right answer being the yeast note and no bacterial
verdict) and, with --mixed, bacteria plus two yeast groups (right: the Gram group and the yeast note).

    # choose a rule on the training styles:
    PYTHONPATH=src python bench/vision_vote.py --sites site-a,site-b,site-c,site-random --images 64 --mixed 15
    # then report the never-seen ones:
    PYTHONPATH=src python bench/vision_vote.py --sites site-d-webcam,site-e-halogen,site-f-paleblue,site-g-lowmag \\
        --images 48 --seed-base 810000000

Seeds default to 800,000,000 + 100,000 x site + i: disjoint from training (< 10,000,000 per training seed),
`medcloud vision evaluate` (>= 900,000,000) and `bench/vision.py` (>= 950,000,000). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from medcloud.vision.labels import LABEL_INDEX, LABELS
from medcloud.vision.runtime import GramStainModel, gram_vote
from medcloud.vision.synth import ORGANISMS, render_smear
from vision import predict_recording_vote


def record(model: GramStainModel, image: np.ndarray) -> dict[str, Any]:
    """The inputs `GramStainModel.predict` hands its verdict's vote (the verdict side's detections at score
    >= 0.05, crop probabilities and crop boxes), recorded from predict itself, so they are serving's."""
    _, (probs, boxes, dets) = predict_recording_vote(model, image, score_threshold=0.05)
    return {"dets": dets, "probs": probs, "crop_boxes": boxes}


def right(rec: dict[str, Any], code: str, weight: float, mixed: bool, threshold: float) -> bool:
    dets = [d for d in rec["dets"] if d.score >= threshold]
    vote = gram_vote(rec["probs"], rec["crop_boxes"], dets, detector_weight=weight)
    label = LABELS[LABEL_INDEX[code]]
    if label.shape == "yeast":
        return vote.verdict is None and vote.yeast is not None
    return vote.verdict == label.crop_class and (vote.yeast is not None or not mixed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--sites", default="site-a,site-b,site-c,site-random")
    ap.add_argument("--images", type=int, default=32, help="monomicrobial smears per site")
    ap.add_argument("--mixed", type=int, default=0, help="bacteria + yeast smears per site")
    ap.add_argument("--seed-base", type=int, default=800_000_000)
    ap.add_argument("--weights", default="0,0.5", help="detector weights to compare (0 = crop vote alone)")
    ap.add_argument("--threshold", type=float, default=0.25, help="detection score threshold of the vote")
    args = ap.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    if args.model is None:
        from medcloud.vision.registry import resolve

        args.model = str(resolve(None).path)
    model = GramStainModel(Path(args.model), threads=1)
    t0 = time.perf_counter()
    per_site: dict[str, Any] = {}
    for si, site in enumerate(args.sites.split(",")):
        ok = {w: 0 for w in weights}
        mixed_ok = {w: 0 for w in weights}
        for i in range(args.images):
            code = ORGANISMS[i % len(ORGANISMS)]
            n = int(np.random.default_rng(args.seed_base + 50_000_000 + si * 100_000 + i).integers(4, 10))
            smear = render_smear(args.seed_base + si * 100_000 + i, site, (640, 640), 1.0, species=[code] * n)
            rec = record(model, smear.image)
            for w in weights:
                ok[w] += right(rec, code, w, False, args.threshold)
        bacteria = [c for c in ORGANISMS if c != "candida"]
        for i in range(args.mixed):
            code = bacteria[i % len(bacteria)]
            species = [code] * 5 + ["candida"] * 2
            smear = render_smear(args.seed_base + 20_000_000 + si * 100_000 + i, site, (640, 640), 1.0, species=species)
            rec = record(model, smear.image)
            for w in weights:
                mixed_ok[w] += right(rec, code, w, True, args.threshold)
        per_site[site] = {
            f"weight_{w}": {
                "verdict_accuracy": round(ok[w] / max(args.images, 1), 4),
                "right": ok[w],
                **({"mixed_right": mixed_ok[w], "mixed": args.mixed} if args.mixed else {}),
            }
            for w in weights
        }
        if len(weights) == 2:
            a, b = (ok[w] / max(args.images, 1) for w in weights)
            per_site[site]["ratio"] = round(b / a, 3) if a else None
    print(
        json.dumps(
            {
                "bench": "vision_vote",
                "synthetic": True,
                "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
                "model": args.model,
                "images_per_site": args.images,
                "mixed_per_site": args.mixed,
                "seed_base": args.seed_base,
                "weights": weights,
                "per_site": per_site,
                "seconds": round(time.perf_counter() - t0, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
