"""Leave-one-style-out evaluation of an exported model through the serving runtime, per class and per site.

Held-out smears are rendered at 640x640 from seeds that training never uses, for every site style. A
style is "seen" when the model's `training.json` lists it among its training sites (the generator's own
`seen` flag only when the model records none), so a model trained with one style left out is scored on
that style as never seen. The result, like the card written from it, leads with the worst never-seen
style (`medcloud.vision.robustness`): its mAP50 and verdict accuracy, and the robustness warning.

* Detection: AP50 and recall per class, per site; the overall mAP50 is over the seen styles only.
* Verdict (`verdict_accuracy`, also written as `crop_vote_accuracy`): monomicrobial smears (one species
  plus red cells), the blood-culture case, Candida included. A bacterial smear is right when the Gram
  verdict names its group; a Candida-only smear is right when the answer is "yeast seen (Candida)" and
  there is NO bacterial verdict. Smears with bacteria and yeast are scored apart (`mixed_yeast_accuracy`:
  the bacterial verdict and the yeast note both present).
* Box conventions: truth can be one box per organism group (VoTT-style, the reference service) or one
  box per cell, and so can the model's training. When they differ, matching is done on group boxes:
  per-cell boxes of one label that touch or overlap are merged into one group box
  (`metrics.merge_touching`; red cells stay one box each), on the prediction side for a per-cell model
  scored against group truth, on the truth side for a group model scored against per-cell truth.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medcloud.errors import InvalidInput
from medcloud.vision.annotations import BOX_CONVENTIONS
from medcloud.vision.labels import CROP_CLASSES, LABEL_INDEX, LABELS, NUM_CLASSES, crop_class_of
from medcloud.vision.metrics import DetectionAccumulator, merge_touching
from medcloud.vision.robustness import robustness
from medcloud.vision.runtime import GramStainModel, Prediction
from medcloud.vision.synth import ORGANISMS, SITES, render_smear

EVAL_SEED_BASE = 900_000_000  # training seeds are below 10_000_000 per training seed
RBC = frozenset({LABEL_INDEX["rbc"]})
# Candida first, so that even a small verdict split (>= 1 image per site) scores the yeast answer.
VERDICT_SPECIES: tuple[str, ...] = ("candida", *(c for c in ORGANISMS if c != "candida"))


def _seed(site_index: int, i: int, kind: int) -> int:
    return EVAL_SEED_BASE + kind * 10_000_000 + site_index * 100_000 + i


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def training_record(model_dir: Path) -> dict[str, Any]:
    """The model's training record: `training.json`, else the `training` of its card, else empty."""
    training = _read_json(model_dir / "training.json")
    if not training:
        card_training = _read_json(model_dir / "card.json").get("training")
        training = card_training if isinstance(card_training, dict) else {}
    return training


def model_box_convention(model_dir: Path) -> str:
    """The box convention the model was trained on ("group" unless its training record says "cell")."""
    training = training_record(model_dir)
    for key in ("box_convention", "boxes", "annotation_convention"):
        value = training.get(key)
        if value in BOX_CONVENTIONS:
            return str(value)
    return "group"


def _render(seed: int, site: str, size: int, truth_boxes: str, species: list[str] | None = None) -> Any:
    if truth_boxes == "group":
        return render_smear(seed, site, (size, size), size / 640, species=species)
    if "boxes" not in inspect.signature(render_smear).parameters:
        raise InvalidInput("this generator draws one box per organism group only; per-cell truth is unavailable")
    per_cell: dict[str, Any] = {"boxes": truth_boxes}  # `boxes=` is newer than some generators
    return render_smear(seed, site, (size, size), size / 640, species=species, **per_cell)


def match_conventions(
    pred: tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]],
    truth: tuple[NDArray[np.float32], NDArray[np.int64]],
    model_boxes: str,
    truth_boxes: str,
) -> tuple[tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]], tuple[Any, Any]]:
    """Bring predictions and truth to one convention: group boxes when the two differ (see module doc)."""
    if model_boxes == truth_boxes:
        return pred, truth
    if model_boxes == "cell":  # per-cell predictions against group truth
        return merge_touching(*pred, keep_separate=RBC), truth
    merged = merge_touching(truth[0], truth[1], keep_separate=RBC)  # group predictions, per-cell truth
    return pred, (merged[0], merged[1])


def evaluate_model(
    model_dir: Path,
    images_per_site: int = 40,
    verdict_images_per_site: int = 40,
    sites: tuple[str, ...] | None = None,
    size: int = 640,
    threads: int = 2,
    truth_boxes: str = "group",
    model_boxes: str | None = None,
) -> dict[str, Any]:
    """Metrics for the card: worst never-seen site first, then overall (seen styles), per class, per site."""
    for value in (truth_boxes, model_boxes):
        if value is not None and value not in BOX_CONVENTIONS:
            raise InvalidInput(f"box convention must be one of {', '.join(BOX_CONVENTIONS)}, not {value!r}")
    unknown = [s for s in sites or () if s not in SITES]
    if unknown:
        raise InvalidInput(f"unknown site {unknown[0]!r}; see `medcloud vision sites`")
    model_conv = model_boxes or model_box_convention(model_dir)
    training = training_record(model_dir)
    trained_on = training.get("sites")
    seen_sites = set(trained_on) if isinstance(trained_on, list) else {n for n, s in SITES.items() if s.seen}

    model = GramStainModel(model_dir, threads=threads)
    site_names = sites or tuple(SITES)
    site_order = list(SITES)
    overall = DetectionAccumulator(NUM_CLASSES)
    per_site: dict[str, Any] = {}
    for site in site_names:
        si = site_order.index(site)
        seen = site in seen_sites
        acc = DetectionAccumulator(NUM_CLASSES)
        for i in range(images_per_site):
            s = _render(_seed(si, i, 0), site, size, truth_boxes)
            pred = model.predict(s.image, score_threshold=0.05)
            p, t = match_conventions(_as_arrays(pred), (s.boxes, s.labels), model_conv, truth_boxes)
            acc.add(*p, *t)
            if seen:
                overall.add(*p, *t)
        verdict = _score_verdicts(model, si, site, size, truth_boxes, verdict_images_per_site)
        per_site[site] = {
            "seen_in_training": seen,
            "images": images_per_site,
            "map50": acc.mean_ap(),
            "mean_recall": acc.mean_recall(),
            "per_class_ap50": {LABELS[c].code: r["ap50"] for c, r in enumerate(acc.per_class())},
            **verdict,
        }
    seen_names = [s for s in site_names if per_site[s]["seen_in_training"]]
    per_class = {LABELS[c].code: r for c, r in enumerate(overall.per_class())}
    vote = [per_site[s]["verdict_accuracy"] for s in seen_names]
    return {
        **robustness(per_site),
        "synthetic": True,
        "split": f"held-out synthetic smears {size}x{size}, seeds >= {EVAL_SEED_BASE}",
        "iou_threshold": 0.5,
        "box_convention": {
            "truth": truth_boxes,
            "model": model_conv,
            "matched_as": _matched_as(model_conv, truth_boxes),
        },
        "map50": overall.mean_ap(),
        "mean_recall": overall.mean_recall(),
        "map50_sites": "training-style sites only: " + ", ".join(seen_names),
        "per_class": per_class,
        "per_site": per_site,
        "verdict_accuracy": round(float(np.mean(vote)), 4) if vote else None,
        "crop_vote_accuracy": round(float(np.mean(vote)), 4) if vote else None,
        "verdict_rule": "monomicrobial smears, Candida included: a bacterial smear needs the right Gram group; "
        "a Candida-only smear needs the yeast answer and no bacterial verdict",
    }


def _matched_as(model_conv: str, truth_conv: str) -> str:
    return truth_conv if model_conv == truth_conv else "group (touching per-cell boxes of one label merged)"


def verdict_correct(pred: Prediction, code: str) -> bool:
    """Whether one monomicrobial smear of species `code` got the right answer (yeast: no bacterial verdict)."""
    if LABELS[LABEL_INDEX[code]].shape == "yeast":
        return pred.verdict is None and pred.yeast is not None
    return pred.verdict == CROP_CLASSES[crop_class_of(LABEL_INDEX[code])]


def _score_verdicts(
    model: GramStainModel, si: int, site: str, size: int, truth_boxes: str, n_images: int
) -> dict[str, Any]:
    ok = candida_ok = candida_n = false_yeast = 0
    for i in range(n_images):
        code = VERDICT_SPECIES[i % len(VERDICT_SPECIES)]
        n = int(np.random.default_rng(_seed(si, i, 1)).integers(4, 10))
        s = _render(_seed(si, i, 2), site, size, truth_boxes, species=[code] * n)
        pred = model.predict(s.image, score_threshold=0.25)
        right = verdict_correct(pred, code)
        ok += right
        if code == "candida":
            candida_n += 1
            candida_ok += right
        else:
            false_yeast += pred.yeast is not None
    # Bacteria with yeast beside them: the bacterial verdict and the yeast note are both expected.
    mixed_n = max(1, n_images // 8) if n_images else 0
    mixed_ok = 0
    bacteria = VERDICT_SPECIES[1:]
    for i in range(mixed_n):
        code = bacteria[(i * 5 + si) % len(bacteria)]
        s = _render(_seed(si, i, 3), site, size, truth_boxes, species=[code] * 5 + ["candida"] * 2)
        pred = model.predict(s.image, score_threshold=0.25)
        mixed_ok += verdict_correct(pred, code) and pred.yeast is not None
    accuracy = round(ok / max(n_images, 1), 4)
    return {
        "verdict_accuracy": accuracy,
        "crop_vote_accuracy": accuracy,
        "crop_vote_images": n_images,
        "candida_images": candida_n,
        "candida_accuracy": round(candida_ok / candida_n, 4) if candida_n else None,
        "yeast_false_alarms": false_yeast,
        "mixed_yeast_images": mixed_n,
        "mixed_yeast_accuracy": round(mixed_ok / mixed_n, 4) if mixed_n else None,
    }


def _as_arrays(pred: Prediction) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
    dets = pred.ranked()  # a multi-scale model's alternative labels are part of its ranked output
    boxes = np.array([d.box for d in dets], dtype=np.float32).reshape(-1, 4)
    labels = np.array([d.label for d in dets], dtype=np.int64)
    scores = np.array([d.score for d in dets], dtype=np.float32)
    return boxes, labels, scores


# ---- a laboratory's own annotated photos ----


def folder_verdict_truth(codes: list[str]) -> str | None:
    """The species whose right answer an annotated photo asks for (`verdict_correct`), or None when the
    photo does not ask one: no organism boxed, or bacteria of more than one Gram group (polymicrobial)."""
    organisms = [c for c in codes if c != "rbc"]
    bacteria = [c for c in organisms if LABELS[LABEL_INDEX[c]].shape != "yeast"]
    groups = {crop_class_of(LABEL_INDEX[c]) for c in bacteria}
    if len(groups) > 1:
        return None
    if bacteria:
        return bacteria[0]
    return "candida" if organisms else None


def evaluate_folder(
    model_dir: Path,
    folder: Path,
    fmt: str | None = None,
    images_dir: Path | None = None,
    from_boxes: str | None = None,
    model_boxes: str | None = None,
    threads: int = 2,
    progress: Any = None,
) -> dict[str, Any]:
    """The model on a laboratory's own annotated photos (a VoTT, COCO or YOLO folder), scored as a site
    training never saw: mAP50 (IoU 0.5) and recall per class, and the Gram verdict on every photo that asks
    one (`folder_verdict_truth`; a photo with bacteria and yeast also needs the yeast note).

    The folder must pass `medcloud vision annotations check` (refused otherwise, with the count of problems).
    Photos are read as the service reads an upload (`decode_photo`: EXIF orientation applied); a photo whose
    upright size is not its annotated size is left out and named in `skipped`.
    """
    from medcloud.vision.annotation_folder import check_folder, locate, read_annotations, safe_image_path
    from medcloud.vision.runtime import decode_photo

    source, pre = locate(folder, fmt, images_dir, format_option="--folder-format")
    if source is None:
        raise InvalidInput(f"{folder}: {'; '.join(p.message for p in pre) or 'no annotations found'}")
    rep = check_folder(source, from_boxes=from_boxes, pre=pre)
    if rep.errors:
        raise InvalidInput(
            f"{folder}: {rep.errors} problem(s) in the annotations; see `medcloud vision annotations check {folder}`"
        )
    images = read_annotations(source, rep, from_boxes)
    truth_conv = str(rep.convention.get("used") or "group")
    model_conv = model_boxes or model_box_convention(model_dir)
    model = GramStainModel(model_dir, threads=threads)
    acc = DetectionAccumulator(NUM_CLASSES)
    skipped: list[dict[str, str]] = []
    asked = right = candida_n = candida_ok = mixed_n = mixed_ok = scored = 0
    wrong: dict[str, int] = {}
    for i, im in enumerate(images):
        if progress is not None:
            progress(i, len(images))
        photo = decode_photo(safe_image_path(source.images, im.file_name).read_bytes(), least_side=model.decode_side)
        if (photo.width, photo.height) != (im.width, im.height):
            skipped.append(
                {
                    "file": im.file_name,
                    "reason": f"annotated as {im.width}x{im.height}, the photo is {photo.width}x{photo.height} "
                    "upright (EXIF orientation applied)",
                }
            )
            continue
        scored += 1
        truth = (
            np.array(im.boxes, dtype=np.float32).reshape(-1, 4),
            np.array([LABEL_INDEX[c] for c in im.labels], dtype=np.int64),
        )
        pred = model.predict_photo(photo, score_threshold=0.05)
        p, t = match_conventions(_as_arrays(pred), truth, model_conv, truth_conv)
        acc.add(*p, *t)
        code = folder_verdict_truth(im.labels)
        if code is None:
            continue
        answer = model.predict_photo(photo, score_threshold=0.25)
        with_yeast = code != "candida" and "candida" in im.labels
        ok = verdict_correct(answer, code) and (not with_yeast or answer.yeast is not None)
        if with_yeast:
            mixed_n += 1
            mixed_ok += ok
        else:
            asked += 1
            right += ok
            if code == "candida":
                candida_n += 1
                candida_ok += ok
        if not ok:
            key = f"{code}->{answer.verdict}"
            wrong[key] = wrong.get(key, 0) + 1
    if progress is not None:
        progress(len(images), len(images))
    if not scored:
        raise InvalidInput(f"{folder}: no photo could be scored ({len(skipped)} left out); see `skipped` reasons")
    return {
        "seen_in_training": False,
        "source": f"annotation folder {folder} ({source.format})",
        "synthetic": rep.synthetic_images == rep.images,
        "images": scored,
        "skipped": skipped,
        "box_convention": {"truth": truth_conv, "model": model_conv, "matched_as": _matched_as(model_conv, truth_conv)},
        "map50": acc.mean_ap(),
        "mean_recall": acc.mean_recall(),
        "per_class_ap50": {LABELS[c].code: r["ap50"] for c, r in enumerate(acc.per_class()) if r["instances"]},
        "verdict_images": asked,
        "verdict_accuracy": round(right / asked, 4) if asked else None,
        "crop_vote_accuracy": round(right / asked, 4) if asked else None,
        "verdict_errors": dict(sorted(wrong.items(), key=lambda kv: -kv[1])),
        "candida_images": candida_n,
        "candida_accuracy": round(candida_ok / candida_n, 4) if candida_n else None,
        "mixed_yeast_images": mixed_n,
        "mixed_yeast_accuracy": round(mixed_ok / mixed_n, 4) if mixed_n else None,
    }


def with_site(metrics: dict[str, Any], name: str, site: dict[str, Any]) -> dict[str, Any]:
    """`metrics` with one more never-seen site in `per_site`, its headline and warning judged again."""
    per_site = {**metrics.get("per_site", {}), name: site}
    return {**metrics, **robustness(per_site), "per_site": per_site}
