"""Vision benchmarks (JSON on stdout): latency, cold start of `medcloud serve-model` beside a torch server,
and accuracy of the packaged SYNTHETIC-trained model.

    python bench/vision.py latency [--runs 100]
    python bench/vision.py coldstart [--repeat 3]
    python bench/vision.py accuracy [--images 40]
    python bench/vision.py loso [--images 40 --verdict-images 34 --compare OLD_MODEL_DIR]
    python bench/vision.py all
    python bench/vision.py loso ... --write-card         # also record the result in the model's card.json
    python bench/vision.py all --images 0 --verdict-images 0 --write-card   # serving figures into the card
    python bench/vision.py loso --scales 320 --compare DIR --compare-scales 192,320,416   # inference recipes

`--write-card` replaces only the card's `leave_one_style_out` (after `loso` with images) and/or `serving`
(after `latency` + `coldstart`, i.e. `all`) sections; everything else in card.json is kept, and it refuses
to write when the card's ONNX SHA-256 no longer match the files (the card would describe other weights).

`loso` is the leave-one-style-out bar of issue 13: mAP50 and the Gram verdict on each synthetic style,
the never-trained ones first, with Candida-only smears counted (right answer: no bacterial verdict); with
`--compare` the same smears go through a second model (e.g. the previous version) side by side.

`torch-server` is the comparison server for the cold start: the same minimal HTTP server as serve-model,
but importing torch and running the torch weights of the same model.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TOKEN = "bench-token-0123456789abcdef0123456789"  # noqa: S105 - a throwaway local token


def _model_dir(arg: str | None) -> Path:
    """A model folder, a registered version's name (e.g. 0.6.1-synthetic), or the newest shipped model."""
    from medcloud.vision.registry import resolve

    if not arg:
        return resolve(None).path
    return Path(arg) if Path(arg).is_dir() or "/" in arg else resolve(None, version=arg).path


def _image(size: int = 640) -> np.ndarray:
    from medcloud.vision.synth import render_smear

    return render_smear(777_000_001, "site-a", (size, size), size / 640).image


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def latency(model_dir: Path, runs: int, threads: int, scales: Any = None) -> dict[str, Any]:
    from medcloud.vision.runtime import INPUT_LONG_SIDE, GramStainModel, prepare_scales

    model = GramStainModel(model_dir, threads=threads, scales=scales)
    sides = model.scales.sides
    all_sides = tuple(dict.fromkeys((*sides, INPUT_LONG_SIDE)))
    img = _image(640)
    xs = prepare_scales(img, all_sides, colour=model.colour)
    for _ in range(5):
        model.predict(img)
    det, full, prep = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        for side in sides:  # every scale the model runs at
            model.detector.run(None, {"image": xs[side][0]})
        det.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        prepare_scales(img, all_sides, colour=model.colour)
        prep.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        model.predict(img)
        full.append((time.perf_counter() - t0) * 1000)
    return {
        "image": "640x640 RGB (synthetic smear)",
        "detector_input": [list(xs[side][0].shape) for side in sides],
        "inference": model.scales.to_json(),
        "threads": threads,
        "runs": runs,
        "detector_onnx_ms": {"p50": _pct(det, 50), "p95": _pct(det, 95)},
        "preprocess_ms": {"p50": _pct(prep, 50), "p95": _pct(prep, 95)},
        "full_pipeline_ms": {
            "p50": _pct(full, 50),
            "p95": _pct(full, 95),
            "note": "resize + detector at each scale + peak decode + NMS + 25-crop classifier + vote",
        },
        "detector_onnx_bytes": (model_dir / "detector.onnx").stat().st_size,
        "classifier_onnx_bytes": (model_dir / "classifier.onnx").stat().st_size,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _time_to_first_answer(argv: list[str], port: int, body: bytes) -> dict[str, Any]:
    import http.client

    env = dict(os.environ, MEDCLOUD_SERVE_TOKEN_SHA256=hashlib.sha256(TOKEN.encode()).hexdigest())
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = t0 + 120  # a server that accepts and then fails every request must not hang the bench
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv} exited with {proc.returncode}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{argv[:3]} gave no answer within 120 s (see its stderr)")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request(
                    "POST",
                    "/api/v1/inference",
                    body=body,
                    headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"},
                )
                resp = conn.getresponse()
                payload = json.loads(resp.read())
                conn.close()
                if resp.status == 200:
                    break
                raise RuntimeError(f"status {resp.status}: {payload}")
            except (ConnectionRefusedError, ConnectionResetError):
                time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        return {"seconds": round(elapsed, 3), "rss_mb": _rss_mb(proc.pid), "boxes": len(payload["detections"])}
    finally:
        proc.terminate()
        proc.wait(10)


def coldstart(model_dir: Path, repeat: int) -> dict[str, Any]:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_image(640)).save(buf, format="PNG")
    body = buf.getvalue()
    medcloud = str(Path(sys.executable).with_name("medcloud"))
    runs: dict[str, list[dict[str, Any]]] = {"serve_model_onnxruntime": [], "torch_server": []}
    for _ in range(repeat):  # interleaved, so both see the same machine load
        port = _free_port()
        runs["serve_model_onnxruntime"].append(
            _time_to_first_answer(
                [medcloud, "serve-model", "--host", "127.0.0.1", "--port", str(port), "--model", str(model_dir)],
                port,
                body,
            )
        )
        port = _free_port()
        runs["torch_server"].append(
            _time_to_first_answer(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "torch-server",
                    "--port",
                    str(port),
                    "--model",
                    str(model_dir),
                ],
                port,
                body,
            )
        )
    out: dict[str, Any] = {"repeat": repeat, "measure": "spawn -> first authenticated POST /api/v1/inference 200"}
    for k, v in runs.items():
        secs = [r["seconds"] for r in v]
        out[k] = {
            "median_s": round(statistics.median(secs), 3),
            "min_s": min(secs),
            "max_s": max(secs),
            "rss_mb": statistics.median([r["rss_mb"] or 0 for r in v]),
            "boxes": v[0]["boxes"],
        }
    out["speedup"] = round(out["torch_server"]["median_s"] / out["serve_model_onnxruntime"]["median_s"], 2)
    return out


def accuracy(model_dir: Path, images: int, verdict_images: int) -> dict[str, Any]:
    from medcloud.vision.evaluate import evaluate_model

    m = evaluate_model(model_dir, images_per_site=images, verdict_images_per_site=verdict_images)
    return {
        # Leave-one-style-out: the worst never-trained style leads (bars: mAP50 >= 0.70, verdict >= 0.95 each).
        "headline": m["headline"],
        "robustness_warning": m["robustness_warning"],
        "map50_training_style_sites": m["map50"],
        "mean_recall": m["mean_recall"],
        "crop_vote_accuracy_training_style_sites": m["crop_vote_accuracy"],
        "per_class_ap50": {k: v["ap50"] for k, v in m["per_class"].items()},
        "per_site": {
            k: {
                "seen_in_training": v["seen_in_training"],
                "map50": v["map50"],
                "mean_recall": v["mean_recall"],
                "crop_vote_accuracy": v["crop_vote_accuracy"],
                "verdict_accuracy": v["verdict_accuracy"],
                "candida_accuracy": v["candida_accuracy"],
                "mixed_yeast_accuracy": v["mixed_yeast_accuracy"],
            }
            for k, v in m["per_site"].items()
        },
        "images_per_site": images,
        "synthetic": True,
    }


class VoteRecorder:
    """Stands in for `runtime.gram_vote` while installed (`runtime.gram_vote = recorder`; put back
    `recorder.real` after): it keeps the inputs of the last call (crop probabilities, crop boxes, the
    verdict side's boxes), which in `GramStainModel.predict` is the verdict's own vote, and answers as the
    real vote does. Benches re-vote what it kept under other rules, on inputs identical to serving's."""

    def __init__(self) -> None:
        from medcloud.vision import runtime

        self.last: tuple[Any, ...] | None = None
        self.real = runtime.gram_vote

    def __call__(self, probs: Any, crop_boxes: Any, dets: Any, *args: Any, **kw: Any) -> Any:
        self.last = (np.array(probs), np.array(crop_boxes), list(dets))
        return self.real(probs, crop_boxes, dets, *args, **kw)


def predict_recording_vote(model: Any, image: Any, score_threshold: float = 0.25) -> tuple[Any, tuple[Any, ...]]:
    """`model.predict(image, score_threshold)` with a `VoteRecorder` installed for that call alone: the
    prediction, and the inputs of its verdict's vote (crop probabilities, crop boxes, the verdict side's
    boxes)."""
    from medcloud.vision import runtime

    recorder = VoteRecorder()
    runtime.gram_vote = recorder  # type: ignore[assignment]
    try:
        prediction = model.predict(image, score_threshold)
    finally:
        runtime.gram_vote = recorder.real
    assert recorder.last is not None
    return prediction, recorder.last


def _verdict_truth(code: str) -> str | None:
    from medcloud.vision.labels import CROP_CLASSES, LABEL_INDEX, crop_class_of

    group = CROP_CLASSES[crop_class_of(LABEL_INDEX[code])]
    return None if group == "background" else group  # yeast-only smear: no bacterial Gram verdict


def add_detections(acc: Any, dets: Any, boxes: np.ndarray, labels: np.ndarray) -> None:
    """One smear's ranked detections against its truth boxes, into a `metrics.DetectionAccumulator`."""
    acc.add(
        np.array([d.box for d in dets], dtype=np.float32).reshape(-1, 4),
        np.array([d.label for d in dets], dtype=np.int64),
        np.array([d.score for d in dets], dtype=np.float32),
        boxes,
        labels,
    )


def count_verdict(
    ok: dict[str, int], wrong: dict[str, dict[str, int]], key: str, code: str, verdict: Any, truth: Any
) -> None:
    """Tally one monomicrobial smear's Gram verdict for model `key`; a wrong one by "organism->verdict"."""
    ok[key] += int(verdict == truth)
    if verdict != truth:
        error = f"{code}->{verdict}"
        wrong[key][error] = wrong[key].get(error, 0) + 1


def loso_sites() -> list[str]:
    """`leave_one_style_out`'s site order, never-trained first; a site's place in it picks its seeds."""
    from medcloud.vision.synth import SITES, UNSEEN_SITES

    return list(UNSEEN_SITES) + [s for s in SITES if s not in UNSEEN_SITES]


def loso_verdict_smear(site: str, si: int, i: int, offset: int = 0) -> tuple[Any, str]:
    """Verdict smear `i` of `site` (at `si` in `loso_sites`) and its organism: one species, all 16 in turn,
    4-9 groups. `offset` moves every seed (fresh smears of the same design)."""
    from medcloud.vision.synth import ORGANISMS, render_smear

    code = ORGANISMS[i % len(ORGANISMS)]
    n = int(np.random.default_rng(offset + 960_000_000 + si * 100_000 + i).integers(4, 10))
    return render_smear(offset + 970_000_000 + si * 100_000 + i, site, (640, 640), 1.0, species=[code] * n), code


def leave_one_style_out(
    model_dirs: dict[str, Path],
    images: int,
    verdict_images: int,
    boxes: str = "group",
    threads: int = 2,
    scales: dict[str, Any] | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """Per site (unseen first): detection mAP50 (IoU 0.5) and Gram-verdict accuracy, for each model.

    Smears are rendered once (seeds disjoint from training and from `evaluate`) and scored by every model.
    Verdict smears are monomicrobial (one species, 4-9 groups, red cells), all 16 organisms in turn,
    Candida included: its right answer is "no bacterial verdict" (the crop vote returns None).
    mAP50 scores each model's whole ranked output (`Prediction.ranked()`: with a multi-scale model's
    alternative labels); `map50_primary` the one-label-per-group detections alone.
    `scales` overrides a model's recorded inference scales (`runtime.InferenceScales`), by key.
    `offset` moves every seed: fresh smears of the same design, for a candidate's check set that no earlier
    candidate was read on (the card's figures use offset 0).
    """
    from medcloud.vision.labels import NUM_CLASSES
    from medcloud.vision.metrics import DetectionAccumulator
    from medcloud.vision.runtime import DETECTOR_VOTE_WEIGHT, GramStainModel
    from medcloud.vision.synth import SITES, UNSEEN_SITES, render_smear

    models = {k: GramStainModel(v, threads=threads, scales=(scales or {}).get(k)) for k, v in model_dirs.items()}
    order = loso_sites()
    per_site: dict[str, Any] = {}
    for si, site in enumerate(order):
        accs = {k: DetectionAccumulator(NUM_CLASSES) for k in models}
        primary = {k: DetectionAccumulator(NUM_CLASSES) for k in models}  # one label per group only
        ok = dict.fromkeys(models, 0)
        wrong: dict[str, dict[str, int]] = {k: {} for k in models}
        for i in range(images):
            smear = render_smear(offset + 950_000_000 + si * 100_000 + i, site, (640, 640), 1.0, boxes=boxes)
            for k, m in models.items():
                pred = m.predict(smear.image, score_threshold=0.05)
                for acc, dets in ((accs[k], pred.ranked()), (primary[k], pred.detections)):
                    add_detections(acc, dets, smear.boxes, smear.labels)
        for i in range(verdict_images):
            smear, code = loso_verdict_smear(site, si, i, offset)
            truth = _verdict_truth(code)
            for k, m in models.items():
                count_verdict(ok, wrong, k, code, m.predict(smear.image).verdict, truth)
        per_site[site] = {
            "seen_in_training": SITES[site].seen,
            "description": SITES[site].description,
            **{
                k: {
                    "map50": accs[k].mean_ap(),
                    # mAP50 of the one-label-per-group detections alone (no alternative labels): equal to
                    # map50 for a single-scale model
                    "map50_primary": primary[k].mean_ap(),
                    "mean_recall": accs[k].mean_recall(),
                    "verdict_accuracy": round(ok[k] / max(verdict_images, 1), 4),
                    "verdict_errors": dict(sorted(wrong[k].items(), key=lambda kv: -kv[1])),
                }
                for k in models
            },
        }
    summary: dict[str, Any] = {}
    for k in models:
        unseen = {s: per_site[s][k] for s in UNSEEN_SITES}
        worst = min(unseen, key=lambda s: unseen[s]["map50"])
        summary[k] = {
            "worst_unseen_site": worst,
            "worst_unseen_map50": unseen[worst]["map50"],
            "min_unseen_verdict": min(v["verdict_accuracy"] for v in unseen.values()),
            "mean_unseen_map50": round(float(np.mean([v["map50"] for v in unseen.values()])), 4),
            "min_unseen_map50_primary": min(v["map50_primary"] for v in unseen.values()),
            "mean_seen_map50": round(
                float(np.mean([per_site[s][k]["map50"] for s in per_site if per_site[s]["seen_in_training"]])), 4
            ),
            "bars": {"unseen_map50_each": 0.70, "unseen_verdict_each": 0.95},
            "meets_bars": all(v["map50"] >= 0.70 and v["verdict_accuracy"] >= 0.95 for v in unseen.values()),
        }
    if len(models) == 2:
        a, b = list(models)
        summary["ratio_unseen_map50"] = {
            s: round(per_site[s][a]["map50"] / max(per_site[s][b]["map50"], 1e-6), 2) for s in UNSEEN_SITES
        }
    return {
        "synthetic": True,
        "boxes": boxes,
        "iou_threshold": 0.5,
        "images_per_site": images,
        "verdict_images_per_site": verdict_images,
        "seed_offset": offset,
        "verdict_rule": "runtime.gram_vote: crop vote weighed with the detector's bacterial boxes "
        f"(detector weight {DETECTOR_VOTE_WEIGHT}); yeast and red cells never vote; "
        "Candida-only smears must get no bacterial verdict",
        "models": {k: str(v) for k, v in model_dirs.items()},
        "inference": {k: m.scales.to_json() for k, m in models.items()},
        "summary": summary,
        "per_site": per_site,
    }


def card_loso_section(result: dict[str, Any], command: str, seconds: float) -> dict[str, Any]:
    """The card's `leave_one_style_out`: the first model's figures, the compared model's beside them."""
    from medcloud.vision.synth import UNSEEN_SITES

    first, *others = list(result["models"])
    summary = result["summary"][first]
    section: dict[str, Any] = {
        "lead": f"worst never-trained style: {summary['worst_unseen_site']} mAP50 {summary['worst_unseen_map50']}; "
        f"lowest unseen Gram verdict {summary['min_unseen_verdict']} (bars 0.70 / 0.95)",
        **{k: result[k] for k in ("synthetic", "boxes", "iou_threshold", "images_per_site", "verdict_images_per_site")},
        "verdict_rule": result["verdict_rule"],
        "inference": result.get("inference"),
        "command": command,
        "seconds": seconds,
        "summary": summary,
    }
    for other in others:
        short = other.removesuffix("-synthetic")
        section[f"previous_model_{short}"] = result["summary"][other]
        section[f"ratio_unseen_map50_vs_{short}"] = {
            s: round(result["per_site"][s][first]["map50"] / max(result["per_site"][s][other]["map50"], 1e-6), 2)
            for s in UNSEEN_SITES
        }
    section["per_site"] = {
        site: {
            "seen_in_training": v["seen_in_training"],
            **v[first],
            **{o: {"map50": v[o]["map50"], "verdict_accuracy": v[o]["verdict_accuracy"]} for o in others},
        }
        for site, v in result["per_site"].items()
    }
    return section


def card_serving_section(out: dict[str, Any], command: str) -> dict[str, Any]:
    """The card's `serving`: pipeline latency and the cold start of serve-model, with the machine's load."""
    lat = out["latency"]
    return {
        "command": command,
        "machine": out["machine"],
        "threads": lat["threads"],
        "inference": lat.get("inference"),
        "full_pipeline_ms": lat["full_pipeline_ms"],
        "detector_onnx_ms": lat["detector_onnx_ms"],
        "preprocess_ms": lat["preprocess_ms"],
        "coldstart_serve_model_s": out["coldstart"]["serve_model_onnxruntime"]["median_s"],
        "bars": {"full_pipeline_p50_ms": 30, "coldstart_s": 0.8},
    }


def write_card_sections(model_dir: Path, sections: dict[str, Any]) -> None:
    """Replace the named sections of the model's card.json, keeping the rest; refuse if the weights changed."""
    from medcloud.errors import InvalidInput
    from medcloud.vision.registry import sha256_file

    path = model_dir / "card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    if not card.get("files"):
        raise InvalidInput(f"{path} lists no model files; write it with `medcloud vision evaluate --write-card`")
    for name, meta in card["files"].items():
        if sha256_file(model_dir / name) != meta["sha256"]:
            raise InvalidInput(f"{model_dir / name} does not match the card's SHA-256; not writing the card")
    card.update(sections)
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _command(model_dir: Path) -> str:
    args = [a if a != str(model_dir) else "{MODEL}" for a in sys.argv[1:]]
    return "python bench/vision.py " + " ".join(args)


def torch_server(model_dir: Path, port: int) -> None:
    """The comparison server: same stdlib server as serve-model, model run by torch."""
    import numpy as np
    import torch

    from medcloud.vision.nets import DetectorExport, GramCropClassifier, GramDetector
    from medcloud.vision.registry import load_dir
    from medcloud.vision.runtime import (
        INPUT_LONG_SIDE,
        TILE,
        Detection,
        Photo,
        Prediction,
        combine_scales,
        decode_peaks,
        gram_vote,
        inference_scales,
        input_colour,
        prepare_scales,
        tile_origins,
        tiles,
    )
    from medcloud.vision.serve import build_server

    torch.set_num_threads(2)
    det = GramDetector()
    det.load_state_dict(torch.load(model_dir / "detector.pt", weights_only=True))
    det_export = DetectorExport(det).eval()
    cls = GramCropClassifier()
    cls.load_state_dict(torch.load(model_dir / "classifier.pt", weights_only=True))
    cls.eval()
    colour = input_colour(model_dir)
    recipe = inference_scales(model_dir)  # the model's own scales, as the runtime runs it

    class TorchPredictor:
        """`serve.Predictor` run by torch: the same decoding (`decode_side`), scales and answer as the runtime's."""

        decode_side = 2 * max((*recipe.sides, INPUT_LONG_SIDE))

        def predict_photo(self, photo: Photo, score_threshold: float = 0.3) -> Prediction:
            return self.predict(photo.pixels, score_threshold, frame=(photo.width, photo.height))

        def predict(self, image: Any, score_threshold: float = 0.3, frame: tuple[int, int] | None = None) -> Prediction:
            t0 = time.perf_counter()
            h, w = image.shape[:2]
            fw, fh = frame or (w, h)
            scale_x, scale_y = fw / w, fh / h
            inputs = prepare_scales(image, tuple(dict.fromkeys((*recipe.sides, INPUT_LONG_SIDE))), colour=colour)
            per_side: dict[int, list[Detection]] = {}
            with torch.inference_mode():
                for side in recipe.sides:
                    xs, sc = inputs[side]
                    heat, reg = det_export(torch.from_numpy(xs))
                    found = decode_peaks(heat[0].numpy(), reg[0].numpy(), score_threshold)
                    to_photo = np.array([scale_x, scale_y, scale_x, scale_y], dtype=np.float32) / np.float32(sc)
                    for d in found:
                        d.box = tuple(float(v) for v in np.asarray(d.box, dtype=np.float32) * to_photo)  # type: ignore[assignment]
                    per_side[side] = found
                x, scale = inputs[INPUT_LONG_SIDE]
                crops = tiles(x, (round(h * scale), round(w * scale)))
                probs = torch.softmax(cls(torch.from_numpy(crops)), dim=1).numpy()
            alternatives: list[Detection] = []
            if len(recipe.sides) == 1:
                dets = per_side[recipe.sides[0]]
            else:
                dets, alternatives = combine_scales(
                    per_side, recipe.verdict_side, recipe.iou, weight=recipe.alternative_weight
                )
            to_photo = np.array([scale_x, scale_y, scale_x, scale_y], dtype=np.float32) / np.float32(scale)
            origins = np.array(
                tile_origins(x.shape[2:], (round(h * scale), round(w * scale))), dtype=np.float32
            ).reshape(-1, 2)
            crop_boxes = np.concatenate([origins[:, ::-1], origins[:, ::-1] + TILE], axis=1) * to_photo
            vote = gram_vote(probs, crop_boxes, per_side[recipe.verdict_side])  # the runtime's yeast-aware vote
            ms = (time.perf_counter() - t0) * 1000
            return Prediction(dets, vote.votes, vote.verdict, fw, fh, ms, vote.yeast, vote.excluded, alternatives)

    server = build_server(
        TorchPredictor(), load_dir(model_dir), os.environ["MEDCLOUD_SERVE_TOKEN_SHA256"], "127.0.0.1", port
    )
    server.serve_forever(poll_interval=0.2)


def _scales(arg: str | None) -> Any:
    """`--scales 192,320,416` as `runtime.InferenceScales` (the verdict side stays 320); None: the model's own."""
    if not arg:
        return None
    from medcloud.vision.runtime import INPUT_LONG_SIDE, InferenceScales

    sides = tuple(int(v) for v in arg.split(","))
    return InferenceScales(sides, verdict_side=INPUT_LONG_SIDE if INPUT_LONG_SIDE in sides else sides[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["latency", "coldstart", "accuracy", "loso", "all", "torch-server"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--verdict-images", type=int, default=40)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--compare", default=None, help="second model folder for `loso` (e.g. the previous version)")
    ap.add_argument(
        "--scales",
        default=None,
        help="inference long sides for --model, e.g. 320 (the single-scale runtime) or 192,320,416; "
        "default: what the model's training.json records",
    )
    ap.add_argument("--compare-scales", default=None, help="the same for --compare (it may be the same folder)")
    ap.add_argument("--boxes", default="group", choices=["group", "cell"], help="annotation convention for loso")
    ap.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="move every loso seed by this much: fresh smears of the same design (not with --write-card)",
    )
    ap.add_argument(
        "--write-card",
        action="store_true",
        help="record `loso` (leave_one_style_out) and `all` (serving) in the model's card.json",
    )
    args = ap.parse_args()
    model_dir = _model_dir(args.model)
    if args.what == "torch-server":
        torch_server(model_dir, args.port)
        return
    out: dict[str, Any] = {
        "bench": "vision",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "model": str(model_dir),
        "synthetic": True,
    }
    if args.write_card and args.seed_offset:
        raise SystemExit("--write-card records the card's own smears: leave out --seed-offset")
    if args.write_card:
        write_card_sections(model_dir, {})  # refuse before measuring, not after, when the card is stale
    model_scales = _scales(args.scales)
    if args.write_card and model_scales is not None:
        raise SystemExit("--write-card records the model's own inference recipe: leave out --scales")
    if args.what in ("latency", "all"):
        out["latency"] = latency(model_dir, args.runs, args.threads, model_scales)
    if args.what in ("coldstart", "all"):
        out["coldstart"] = coldstart(model_dir, args.repeat)
    if args.what in ("accuracy", "all"):
        out["accuracy"] = accuracy(model_dir, args.images, args.verdict_images)
    loso_seconds = 0.0
    if args.what in ("loso", "all"):
        first = model_dir.name + (f"@{args.scales}" if args.scales else "")
        dirs = {first: model_dir}
        overrides = {first: model_scales}
        if args.compare:
            second = Path(args.compare).name + (f"@{args.compare_scales}" if args.compare_scales else "")
            if second == first:
                raise SystemExit("--compare names the same model and scales as --model")
            dirs[second] = _model_dir(args.compare)
            overrides[second] = _scales(args.compare_scales)
        t0 = time.perf_counter()
        out["leave_one_style_out"] = leave_one_style_out(
            dirs, args.images, args.verdict_images, args.boxes, args.threads, overrides, args.seed_offset
        )
        loso_seconds = round(time.perf_counter() - t0, 1)
    if args.write_card:
        sections: dict[str, Any] = {}
        if "leave_one_style_out" in out and args.images > 0 and args.verdict_images > 0:
            sections["leave_one_style_out"] = card_loso_section(
                out["leave_one_style_out"], _command(model_dir), loso_seconds
            )
        if "latency" in out and "coldstart" in out:
            sections["serving"] = card_serving_section(out, _command(model_dir))
        write_card_sections(model_dir, sections)
        out["card_sections_written"] = sorted(sections)
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
