"""Analysis for the next plan (session 20, after run L shipped as 0.8.0; nothing chosen from it): which of
the low-magnification style's factors make the shipped model call Candida-only SYNTHETIC smears bacterial?

48 Candida-only smears in `site-g-lowmag`'s style at fresh seeds (890,000,000+, apart from every choose,
check and analysis set so far), each drawn once as sampled and again with one factor taken out, all else
(style draw, organisms, their places) the same. Prints JSON: bacterial verdicts and bacterial boxes per
variant.

    .venv/bin/python bench/vision_candidates/gram-stain-runL/candida_factors.py [--model DIR] [--smears 48]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medcloud.vision.labels import NON_BACTERIAL_LABELS
from medcloud.vision.registry import resolve
from medcloud.vision.runtime import GramStainModel
from medcloud.vision.synth import SITES, SiteStyle, render_smear

SITE = "site-g-lowmag"
VARIANTS: dict[str, dict[str, Any]] = {
    "as sampled": {},
    "no debris": {"debris": 0.0},
    "no motion blur": {"motion": 0.0},
    "no JPEG": {"jpeg": 0},
    "magnification 1x": {"magnification": 1.0},
    "no over-decolourising": {"decolorize": 0.0},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--smears", type=int, default=48)
    args = ap.parse_args()
    model_dir = args.model or resolve(None).path
    model = GramStainModel(model_dir, threads=2)
    out: dict[str, Any] = {}
    for name, change in VARIANTS.items():
        verdicts = boxes = 0
        for i in range(args.smears):
            style: SiteStyle = SITES[SITE].sample(np.random.default_rng((890_000_000, i)))
            n = int(np.random.default_rng(890_500_000 + i).integers(4, 10))
            image = render_smear(
                891_000_000 + i, SITE, (640, 640), 1.0, species=["candida"] * n, style=replace(style, **change)
            ).image
            pred = model.predict(image)
            verdicts += pred.verdict is not None
            boxes += sum(d.label not in NON_BACTERIAL_LABELS for d in pred.detections)
        out[name] = {"bacterial_verdicts": verdicts, "bacterial_boxes": boxes, "of": args.smears}
    print(json.dumps({"synthetic": True, "site": SITE, "model": str(model_dir), "variants": out}, indent=2))


if __name__ == "__main__":
    main()
