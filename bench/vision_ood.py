"""Scores Gram-stain models on smears drawn by renderers other than `medcloud.vision.synth`.

    .venv/bin/python bench/vision_ood.py [--model DIR_OR_VERSION ...] [--renderer ood|blind|all]
                                         [--images 60] [--verdict-images 64] [--threads 2]
                                         [--save-examples DIR] [--write-card]

Issue 13's independent check runs a generator written outside the project against the shipped model. Two
stand-ins for it, both SYNTHETIC:

- `ood`: `medcloud.vision.synth_vector` (written in session 13, sharing no drawing code with `synth.py`:
  vector shapes composited by opacity, textbook proportions, its own backgrounds; see its docstring). It
  began as an evaluation-only check here; training may now mix it in (`--vector-share`), and a model's
  `training.json` says whether it did (its figures are then marked seen in training).
- `blind`: `bench/vision_blind.py`, written by another author who was not shown `synth.py`,
  `synth_vector.py` or this file, from the label set and the box convention alone. Nothing under `src/`
  imports it, and no model is trained on it: it is the held-out check.

Annotation convention of both: one box per organism group (a cluster, a chain, a palisade, a pair of
diplococci, a yeast with its buds, one red cell). Seeds 990,000,000 + ...: disjoint from training and from
every other evaluation.

Scores, per renderer, style and model: mAP50 over the 17 labels (COCO-style, all labels present) and the
Gram-verdict accuracy on monomicrobial smears of all 16 organisms (Candida: no bacterial verdict). Prints
JSON; `--write-card` puts the first model's figures on its card (see `write_card`).
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
from PIL import Image

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # bench/vision.py (the card writer)
sys.path.insert(0, str(BENCH.parent / "src"))

from medcloud.vision import synth_vector  # noqa: E402
from medcloud.vision.labels import LABELS, NUM_CLASSES  # noqa: E402
from medcloud.vision.synth_vector import (  # noqa: E402 - the renderer (see its docstring)
    ORGANISMS,
    STYLES,
    OodSmear,
    Style,
    draw_style,
    organism,
    render,
)
from vision import _model_dir, _verdict_truth  # noqa: E402 - bench/vision.py: the same model names and truths

__all__ = ["ORGANISMS", "STYLES", "OodSmear", "Style", "draw_style", "organism", "render", "score"]


def renderers(which: str) -> dict[str, Any]:
    """The separately written renderers by name: this file's (`ood`) and `bench/vision_blind.py` (`blind`,
    written by another author who never saw `synth.py` or this file). Each has `STYLES` and `render`."""
    names = ("ood", "blind") if which == "all" else (which,)
    out: dict[str, Any] = {}
    for name in names:
        if name == "ood":
            out[name] = synth_vector
        elif name == "blind":
            import vision_blind

            out[name] = vision_blind
        else:
            raise ValueError(f"unknown renderer {name!r} (ood, blind or all)")
    return out


def verdict_smear(mod: Any, style: str, si: int, i: int, offset: int = 0) -> tuple[Any, str]:
    """Verdict smear `i` of `style` (at `si` in `mod.STYLES`) and its organism, as `score` draws them: one
    species, all 16 in turn, 4-9 groups. `offset` moves every seed (fresh smears of the same design)."""
    code = ORGANISMS[i % len(ORGANISMS)]
    n = int(np.random.default_rng(offset + 995_000_000 + si * 100_000 + i).integers(4, 10))
    return mod.render(offset + 996_000_000 + si * 100_000 + i, style, species=[code] * n), code


def score(
    model_dirs: dict[str, Path],
    images: int,
    verdict_images: int,
    threads: int,
    renderer: Any = None,
    offset: int = 0,
) -> dict[str, Any]:
    """Per style of `renderer` (`synth_vector` by default): mAP50 and Gram-verdict accuracy of each model.
    `offset` moves every seed (fresh smears of the same design; the card's figures use 0)."""
    from medcloud.vision.metrics import DetectionAccumulator
    from medcloud.vision.runtime import GramStainModel
    from vision import add_detections, count_verdict  # bench/vision.py: the leave-one-style-out scoring

    mod = renderer if renderer is not None else synth_vector
    render, styles = mod.render, mod.STYLES
    models = {k: GramStainModel(v, threads=threads) for k, v in model_dirs.items()}
    per_style: dict[str, Any] = {}
    for si, style in enumerate(styles):
        accs = {k: DetectionAccumulator(NUM_CLASSES) for k in models}
        ok = dict.fromkeys(models, 0)
        wrong: dict[str, dict[str, int]] = {k: {} for k in models}
        for i in range(images):
            smear = render(offset + 990_000_000 + si * 100_000 + i, style)
            for k, m in models.items():
                add_detections(
                    accs[k], m.predict(smear.image, score_threshold=0.05).ranked(), smear.boxes, smear.labels
                )
        for i in range(verdict_images):
            smear, code = verdict_smear(mod, style, si, i, offset)
            truth = _verdict_truth(code)
            for k, m in models.items():
                count_verdict(ok, wrong, k, code, m.predict(smear.image).verdict, truth)
        per_style[style] = {
            k: {
                "map50": accs[k].mean_ap(),
                "mean_recall": accs[k].mean_recall(),
                "per_label_ap50": {
                    LABELS[c].code: (None if row["ap50"] is None else round(float(row["ap50"]), 3))
                    for c, row in enumerate(accs[k].per_class())
                },
                "verdict_accuracy": round(ok[k] / max(verdict_images, 1), 4),
                "verdict_errors": dict(sorted(wrong[k].items(), key=lambda kv: -kv[1])),
            }
            for k in models
        }
    return per_style


CARD_SUFFIX = " (separate renderer)"
RENDERER_FILES = {"ood": "medcloud.vision.synth_vector", "blind": "bench/vision_blind.py"}


def write_card(model_dir: Path, results: dict[str, dict[str, Any]], key: str, args: Any, seconds: float) -> list[str]:
    """The card's `separate_renderers` section, and its headline/warnings recomputed with their styles.

    Run after `medcloud vision evaluate --write-card` (which writes a new card from its own figures) and
    `bench/vision.py loso --write-card`. Each renderer's entry replaces an earlier one of that renderer; every
    style on the card joins the never-seen sites under the name "<style> (separate renderer)", so a model
    that holds up on `synth.py`'s styles but not on smears drawn by other code is flagged on its card and on
    the clinician page.
    """
    from medcloud.vision.robustness import robustness
    from vision import write_card_sections  # bench/vision.py: refuses a card whose weights changed

    card = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    entries = dict(card.get("separate_renderers") or {})
    command = "python bench/vision_ood.py " + " ".join(a if a != str(model_dir) else "{MODEL}" for a in sys.argv[1:])
    trained_on_vector = _vector_share(model_dir) > 0
    for name, per_style in results.items():
        seen = name == "ood" and trained_on_vector
        figures = {style: {"seen_in_training": seen, **v[key]} for style, v in per_style.items()}
        worst = min(figures, key=lambda s: figures[s]["map50"])
        entries[name] = {
            "lead": f"smears drawn by {RENDERER_FILES[name]} ({'seen in training' if seen else 'never trained on'}):"
            f" worst {worst} "
            f"mAP50 {figures[worst]['map50']}, lowest verdict {min(v['verdict_accuracy'] for v in figures.values())}",
            "synthetic": True,
            "renderer": f"{RENDERER_FILES[name]} (shares no drawing code with medcloud.vision.synth)",
            "command": command,
            "seconds": seconds,
            "images_per_style": args.images,
            "verdict_images_per_style": args.verdict_images,
            "per_style": figures,
        }
    styles = {
        style + CARD_SUFFIX: {
            "seen_in_training": v["seen_in_training"],
            "map50": v["map50"],
            "verdict_accuracy": v["verdict_accuracy"],
        }
        for entry in entries.values()
        for style, v in entry["per_style"].items()
    }
    per_site = dict((card.get("metrics") or {}).get("per_site") or {})
    travel = robustness({**per_site, **styles})
    write_card_sections(model_dir, {"separate_renderers": entries, **travel})
    return ["separate_renderers", *travel]


def _vector_share(model_dir: Path) -> float:
    """The share of a model's training smears drawn by `synth_vector` (0 for models before it existed)."""
    path = model_dir / "training.json"
    return float(json.loads(path.read_text()).get("vector_share", 0.0)) if path.is_file() else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="model folder or shipped version (repeat to compare)")
    ap.add_argument("--images", type=int, default=60, help="smears per style for mAP50")
    ap.add_argument("--verdict-images", type=int, default=64, help="monomicrobial smears per style")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--renderer", default="ood", help="ood (this file), blind (bench/vision_blind.py) or all")
    ap.add_argument("--save-examples", type=Path, default=None, help="write a few example smears (PNG) here")
    ap.add_argument(
        "--write-card",
        action="store_true",
        help="write the first model's figures into its card.json (section `separate_renderers`) and recompute the "
        "card's headline and robustness warning with these styles counted as never-seen sites",
    )
    ap.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="move every seed by this much: fresh smears of the same design (not with --write-card)",
    )
    args = ap.parse_args()
    if args.write_card and args.seed_offset:
        sys.exit("vision_ood: --write-card records the card's own smears: leave out --seed-offset")
    mods = renderers(args.renderer)
    if args.save_examples:
        args.save_examples.mkdir(parents=True, exist_ok=True)
        for mod in mods.values():
            for si, style in enumerate(mod.STYLES):
                for i in range(4):
                    Image.fromarray(mod.render(990_000_000 + si * 100_000 + i, style).image).save(
                        args.save_examples / f"{style}-{i}.png"
                    )
    # by folder name, or by the version name given (the newest shipped model when none is given)
    dirs = {m if m and not Path(m).is_dir() else _model_dir(m).name: _model_dir(m) for m in args.model or [None]}
    if args.write_card:  # before minutes of scoring: the card must still describe these weights
        from medcloud.errors import MedcloudError
        from medcloud.vision.registry import load_dir

        try:
            load_dir(next(iter(dirs.values()))).verify()
        except MedcloudError as exc:
            sys.exit(f"vision_ood: not writing the card: {exc}")
    t0 = time.perf_counter()
    results = {
        name: score(dirs, args.images, args.verdict_images, args.threads, mod, args.seed_offset)
        for name, mod in mods.items()
    }
    written: list[str] = []
    if args.write_card:
        first = next(iter(dirs))
        written = write_card(dirs[first], results, first, args, round(time.perf_counter() - t0, 1))
    print(
        json.dumps(
            {
                "bench": "vision_ood",
                "card_sections_written": written,
                "synthetic": True,
                "renderers": {name: RENDERER_FILES[name] for name in mods},
                "note": "renderers written apart from synth.py; the blind one is never trained on, synth_vector "
                "may be (a model's training.json vector_share says)",
                "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
                "models": {k: str(v) for k, v in dirs.items()},
                "images_per_style": args.images,
                "verdict_images_per_style": args.verdict_images,
                "seed_offset": args.seed_offset,
                "per_renderer": results,
                "seconds": round(time.perf_counter() - t0, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
