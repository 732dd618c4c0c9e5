"""One inference service shared by the hub route and `medcloud serve-model`: load once, answer JSON.

The model is loaded lazily, once per process and model folder, into onnxruntime sessions with two intra-op
threads. Imports stay light (numpy, Pillow, onnxruntime) so that a scale-to-zero process starts fast.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from medcloud.errors import InvalidInput
from medcloud.vision.registry import FL_TASK, ModelVersion, load_dir, resolve
from medcloud.vision.runtime import GramStainModel, ImageClassifier, decode_photo

Runtime = GramStainModel | ImageClassifier
_models: dict[Path, Runtime] = {}
_lock = threading.Lock()


def loaded_model(version: ModelVersion, threads: int = 2) -> Runtime:
    """The process-wide runtime for a model folder, created (and hash-checked) on first use: the
    detector, or a federated image classifier (card task `FL_TASK`)."""
    key = version.path.resolve()
    model = _models.get(key)
    if model is None:
        with _lock:
            model = _models.get(key)
            if model is None:
                version.verify()
                if version.task == FL_TASK:
                    model = ImageClassifier(version.path, version.card, threads=threads)
                else:
                    model = GramStainModel(version.path, threads=threads)
                _models[key] = model
    return model


def find_model(
    data_dir: Path | None, name: str | None = None, version: str | None = None, model_dir: Path | None = None
) -> ModelVersion:
    if model_dir is not None:
        return load_dir(model_dir)
    return resolve(data_dir, name or "gram-stain", version)


def parse_threshold(value: str | float | None) -> float:
    if value is None or value == "":
        return 0.3
    try:
        t = float(value)
    except ValueError:
        raise InvalidInput(f"threshold must be a number between 0.05 and 0.95, not {value!r}") from None
    if not 0.05 <= t <= 0.95:
        raise InvalidInput("threshold must be between 0.05 and 0.95")
    return t


def infer(
    version: ModelVersion, data: bytes, threshold: float = 0.3, max_bytes: int = 50 * 1024 * 1024, threads: int = 2
) -> dict[str, Any]:
    """Bytes of an image in, the inference JSON out (boxes in original-image pixels)."""
    model = loaded_model(version, threads)
    photo = decode_photo(data, max_bytes=max_bytes, least_side=model.decode_side)
    pred = model.predict_photo(photo, score_threshold=threshold)
    out = pred.to_json(version.version)
    out["model"] = model_info(version)
    return out


def model_info(version: ModelVersion) -> dict[str, Any]:
    """The `model` object of an inference answer: identity, and how it travels, from the model's card.

    `robustness_warning` (text or null, English and Japanese) and `headline` (the worst site style the
    model never saw in training) come from the card (`medcloud.vision.robustness`), never from code here.
    """
    from medcloud.vision.robustness import card_robustness

    travel = card_robustness(version.card)
    return {
        "name": version.name,
        "version": version.version,
        "sha256": version.card.get("sha256"),
        "synthetic": bool(version.card.get("synthetic", True)),
        "robustness_warning": travel.get("robustness_warning"),
        "robustness_warning_ja": travel.get("robustness_warning_ja"),
        "headline": travel.get("headline"),
    }
