"""Evaluation of an exported model through the serving runtime, per class and per site.

Held-out smears are rendered at 640x640 from seeds that training never uses, for every site, including
the sites whose style training never saw. The detector is scored with AP50 and recall; the crop vote is
scored on monomicrobial smears (one organism species plus red cells), the blood-culture case. Candida
smears are left out of the vote score because yeast is not one of the four Gram groups the vote names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medcloud.vision.labels import LABELS, NUM_CLASSES, crop_class_of
from medcloud.vision.metrics import DetectionAccumulator
from medcloud.vision.runtime import GramStainModel
from medcloud.vision.synth import ORGANISMS, SITES, render_smear

EVAL_SEED_BASE = 900_000_000  # training seeds are below 10_000_000 per training seed


def _seed(site_index: int, i: int, kind: int) -> int:
    return EVAL_SEED_BASE + kind * 10_000_000 + site_index * 100_000 + i


def evaluate_model(
    model_dir: Path,
    images_per_site: int = 40,
    verdict_images_per_site: int = 40,
    sites: tuple[str, ...] | None = None,
    size: int = 640,
    threads: int = 2,
) -> dict[str, Any]:
    """Metrics for the card: overall (training-style sites), per class, per site, crop-vote accuracy."""
    model = GramStainModel(model_dir, threads=threads)
    site_names = sites or tuple(SITES)
    overall = DetectionAccumulator(NUM_CLASSES)
    per_site: dict[str, Any] = {}
    for si, site in enumerate(site_names):
        acc = DetectionAccumulator(NUM_CLASSES)
        for i in range(images_per_site):
            s = render_smear(_seed(si, i, 0), site, (size, size), size / 640)
            pred = model.predict(s.image, score_threshold=0.05)
            args = (*_as_arrays(pred.detections), s.boxes, s.labels)
            acc.add(*args)
            if SITES[site].seen:
                overall.add(*args)
        votes_ok, votes_n = 0, 0
        mono_species = [c for c in ORGANISMS if c != "candida"]
        for i in range(verdict_images_per_site):
            code = mono_species[i % len(mono_species)]
            rng = np.random.default_rng(_seed(si, i, 1))
            n = int(rng.integers(4, 10))
            s = render_smear(_seed(si, i, 2), site, (size, size), size / 640, species=[code] * n)
            pred = model.predict(s.image, score_threshold=0.25)
            truth = crop_class_of(LABELS.index(next(lab for lab in LABELS if lab.code == code)))
            from medcloud.vision.labels import CROP_CLASSES

            votes_n += 1
            votes_ok += int(pred.verdict == CROP_CLASSES[truth])
        per_site[site] = {
            "seen_in_training": SITES[site].seen,
            "images": images_per_site,
            "map50": acc.mean_ap(),
            "mean_recall": acc.mean_recall(),
            "per_class_ap50": {LABELS[c].code: r["ap50"] for c, r in enumerate(acc.per_class())},
            "crop_vote_accuracy": round(votes_ok / max(votes_n, 1), 4),
            "crop_vote_images": votes_n,
        }
    seen = [s for s in site_names if SITES[s].seen]
    per_class = {LABELS[c].code: r for c, r in enumerate(overall.per_class())}
    vote = [per_site[s]["crop_vote_accuracy"] for s in seen]
    return {
        "synthetic": True,
        "split": f"held-out synthetic smears {size}x{size}, seeds >= {EVAL_SEED_BASE}",
        "iou_threshold": 0.5,
        "map50": overall.mean_ap(),
        "mean_recall": overall.mean_recall(),
        "map50_sites": "training-style sites only: " + ", ".join(seen),
        "per_class": per_class,
        "per_site": per_site,
        "crop_vote_accuracy": round(float(np.mean(vote)), 4) if vote else None,
    }


def _as_arrays(dets: list[Any]) -> tuple[Any, Any, Any]:
    boxes = np.array([d.box for d in dets], dtype=np.float32).reshape(-1, 4)
    labels = np.array([d.label for d in dets], dtype=np.int64)
    scores = np.array([d.score for d in dets], dtype=np.float32)
    return boxes, labels, scores
