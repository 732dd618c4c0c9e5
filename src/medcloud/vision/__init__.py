"""Vision models: the Gram-stain detector and crop classifier, synthetic data, training, ONNX export,
the onnxruntime inference runtime and the model registry.

The names below load on first use: the runtime needs onnxruntime and numpy, and training needs torch,
which a hub that serves no model should not pay for at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medcloud.faces import lazy_face

if TYPE_CHECKING:
    from medcloud.vision.registry import ModelVersion, list_models, register, resolve
    from medcloud.vision.runtime import Detection, GramStainModel, Prediction

_FACE = {
    "ModelVersion": "medcloud.vision.registry",
    "list_models": "medcloud.vision.registry",
    "register": "medcloud.vision.registry",
    "resolve": "medcloud.vision.registry",
    "Detection": "medcloud.vision.runtime",
    "GramStainModel": "medcloud.vision.runtime",
    "Prediction": "medcloud.vision.runtime",
}

__all__ = [
    "Detection",
    "GramStainModel",
    "ModelVersion",
    "Prediction",
    "list_models",
    "register",
    "resolve",
]

__getattr__, __dir__ = lazy_face(__name__, _FACE)
