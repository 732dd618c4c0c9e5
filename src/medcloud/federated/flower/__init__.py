"""The Flower ServerApp/ClientApp pair: strategies that aggregate ciphertext bytes in ArrayRecords.

`FLSettings` loads with the package; the apps and strategies need Flower (`flwr`, and Ray for
simulations), so they load on first use: a site or a benchmark that never starts Flower does not
pay for importing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medcloud.faces import lazy_face
from medcloud.federated.flower.settings import FLSettings

if TYPE_CHECKING:
    from medcloud.federated.flower.apps import build_client_app, build_server_app, run_server
    from medcloud.federated.flower.strategy import DeepProtectStrategy, EncryptedFedAvg, PlainFedAvg

_NEEDS_FLOWER = {
    "build_client_app": "medcloud.federated.flower.apps",
    "build_server_app": "medcloud.federated.flower.apps",
    "run_server": "medcloud.federated.flower.apps",
    "DeepProtectStrategy": "medcloud.federated.flower.strategy",
    "EncryptedFedAvg": "medcloud.federated.flower.strategy",
    "PlainFedAvg": "medcloud.federated.flower.strategy",
}

__all__ = [
    "DeepProtectStrategy",
    "EncryptedFedAvg",
    "FLSettings",
    "PlainFedAvg",
    "build_client_app",
    "build_server_app",
    "run_server",
]

__getattr__, __dir__ = lazy_face(__name__, _NEEDS_FLOWER)
