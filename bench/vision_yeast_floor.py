"""The Gram verdict with and without `yeast_floor` (weak bacterial boxes beside yeast give no bacterial verdict).

Each SYNTHETIC smear is run once through the model's `GramStainModel.predict`; the inputs it hands to
`runtime.gram_vote` (crop probabilities, crop boxes, the verdict side's boxes) are recorded and voted again
with each floor, so every rule sees identical inputs. The recording must reproduce predict's own verdict
smear for smear (checked; the script stops otherwise).

    .venv/bin/python bench/vision_yeast_floor.py --set choose --floors 0.30,0.35,0.40,0.45,0.50
    .venv/bin/python bench/vision_yeast_floor.py --set check --floors 0.35        # once, for the chosen floor

Sets (bench/vision_candidates/verdict-yeast/PLAN.md):
- choose: synth.py site-a, b, c, random x 96 monomicrobial at `bench/vision.py loso`'s seeds; synth_vector
  ood-1x, ood-varied x 64 at `bench/vision_ood.py`'s seeds; 32 mixed smears (5 groups of one bacterium + 2
  of Candida) per training style, seeds 820,000,000 + 100,000 x style index + i;
- check: the never-trained synth.py styles d-g x 96, the blind renderer's three styles x 64, and 32 mixed
  smears per never-trained synth.py style (seeds 830,000,000 + ...).
Right answers: a monomicrobial smear's Gram group (Candida: no bacterial verdict); a mixed smear's
bacterial group and the yeast note. Prints JSON: right answers per set and floor ("none" = no floor).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))

import medcloud.vision.runtime as runtime  # noqa: E402
from medcloud.vision.labels import LABEL_INDEX, LABELS  # noqa: E402
from medcloud.vision.synth import ORGANISMS, render_smear  # noqa: E402
from vision import _model_dir, _verdict_truth, predict_recording_vote  # noqa: E402 - bench/vision.py: shared helpers

TRAINING_STYLES = ["site-a", "site-b", "site-c", "site-random"]
NEVER_TRAINED = ["site-d-webcam", "site-e-halogen", "site-f-paleblue", "site-g-lowmag"]
MIXED_SEED = {"choose": 820_000_000, "check": 830_000_000}


def record(model: Any, image: np.ndarray, code: str, mixed: bool) -> dict[str, Any]:
    prediction, (probs, boxes, dets) = predict_recording_vote(model, image)
    verdict = prediction.verdict
    return {"code": code, "mixed": mixed, "verdict": verdict, "probs": probs, "crop_boxes": boxes, "dets": dets}


def smears(which: str, limit: int = 0, offset: int = 0) -> dict[str, list[tuple[np.ndarray, str, bool]]]:
    """The set's smears by name: (image, organism code, mixed); `limit` > 0 keeps the first `limit` of each;
    `offset` moves every seed (fresh smears of the same design)."""

    def first(n: int) -> range:
        return range(min(n, limit) if limit > 0 else n)

    import vision_blind
    from medcloud.vision import synth_vector
    from vision import loso_sites, loso_verdict_smear
    from vision_ood import verdict_smear

    order = loso_sites()
    sites = TRAINING_STYLES if which == "choose" else NEVER_TRAINED
    out: dict[str, list[tuple[np.ndarray, str, bool]]] = {}
    for site in sites:
        rows = []
        for i in first(96):
            smear, code = loso_verdict_smear(site, order.index(site), i, offset)
            rows.append((smear.image, code, False))
        out[site] = rows
    bacteria = [c for c in ORGANISMS if c != "candida"]
    for idx, site in enumerate(sites):
        rows = []
        for i in first(32):
            code = bacteria[i % len(bacteria)]
            seed = offset + MIXED_SEED[which] + idx * 100_000 + i
            species = [code] * 5 + ["candida"] * 2
            rows.append((render_smear(seed, site, (640, 640), 1.0, species=species).image, code, True))
        out[f"{site}/mixed"] = rows
    mod: Any = synth_vector if which == "choose" else vision_blind
    for si, style in enumerate(mod.STYLES):  # bench/vision_ood.py's seeds
        rows = []
        for i in first(64):
            smear, code = verdict_smear(mod, style, si, i, offset)
            rows.append((smear.image, code, False))
        out[style] = rows
    return out


def right(row: dict[str, Any], rule: tuple[str, float] | None) -> bool:
    """Whether the smear's answer is right under `rule`: ("floor", tau), ("ratio", r) or None (as shipped)."""
    kw = {} if rule is None else {"yeast_floor" if rule[0] == "floor" else "yeast_ratio": rule[1]}
    vote = runtime.gram_vote(row["probs"], row["crop_boxes"], row["dets"], **kw)
    if rule is None and vote.verdict != row["verdict"]:
        raise SystemExit(f"the recording does not reproduce predict's verdict ({row['code']})")
    if not row["mixed"]:
        return bool(vote.verdict == _verdict_truth(row["code"]))
    return bool(vote.verdict == LABELS[LABEL_INDEX[row["code"]]].crop_class and vote.yeast is not None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder or shipped version (default: the shipped model)")
    ap.add_argument("--set", choices=("choose", "check"), default="choose")
    ap.add_argument("--floors", default="0.30,0.35,0.40,0.45,0.50", help="absolute floors ('' for none)")
    ap.add_argument("--ratios", default="", help="relative floors (x the best yeast score)")
    ap.add_argument("--seed-offset", type=int, default=0, help="move every seed: fresh smears of the same sets")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="at most this many smears per set (0: the plan's sizes)")
    args = ap.parse_args()
    rules: list[tuple[str, float] | None] = [None]
    rules += [("floor", float(f)) for f in args.floors.split(",") if f]
    rules += [("ratio", float(r)) for r in args.ratios.split(",") if r]
    model_dir = _model_dir(args.model)
    model = runtime.GramStainModel(model_dir, threads=args.threads)
    t0 = time.perf_counter()
    recorded = {
        name: [record(model, image, code, mixed) for image, code, mixed in rows]
        for name, rows in smears(args.set, args.limit, args.seed_offset).items()
    }

    def key(rule: tuple[str, float] | None) -> str:
        return "none" if rule is None else (str(rule[1]) if rule[0] == "floor" else f"ratio {rule[1]}")

    per_set = {
        name: {"n": len(rows), **{key(r): sum(right(row, r) for row in rows) for r in rules}}
        for name, rows in recorded.items()
    }
    totals = {key(r): sum(v[key(r)] for v in per_set.values()) for r in rules}
    print(json.dumps({
        "bench": "vision_yeast_floor", "synthetic": True, "model": str(model_dir), "set": args.set,
        "seed_offset": args.seed_offset, "right_answers": totals, "of": sum(v["n"] for v in per_set.values()),
        "per_set": per_set,
        "seconds": round(time.perf_counter() - t0, 1),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
