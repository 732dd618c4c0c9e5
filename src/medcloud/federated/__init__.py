"""Federated learning: HE backends behind one interface and a registry, DeepProtect-style and
FedAvg protocols, the key ceremony, Flower apps.

Where things live: `he/` (the `HEBackend` interface, one module per scheme, `he.registry` that the
rest asks what a mode can do), `keyfiles` (where key files live), `keys` (the ceremony),
`protocol` (FedAvg and DeepProtect, transport-free), `flower/` (the Flower apps), `simulate`
(one machine), `cli` (`medcloud fl ...`), `certs` (TLS and SuperNode keys), `dp`, `audit`, and
the learning tasks `tabular`, `mlp` and `images`.

The names below load on first use: `medcloud` imports `medcloud.federated.cli` for every command,
and this package's code needs numpy and `cryptography`, which would double the CLI's start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medcloud.faces import lazy_face

if TYPE_CHECKING:
    from medcloud.federated.dp import DPConfig
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.he.base import Ciphertext, HEBackend, HEError, NoSecretKey
    from medcloud.federated.he.registry import BackendSpec, KeygenStep, SharedKey, backend_names, backend_spec, register
    from medcloud.federated.keyfiles import KeyPaths
    from medcloud.federated.keys import aggregator_backend, site_backend
    from medcloud.federated.protocol import (
        DeepProtectServer,
        DeepProtectSite,
        FedAvgAggregator,
        FedAvgSite,
        GlobalModel,
        RoundStats,
        run_fedavg,
    )

_FACE = {
    "DPConfig": "medcloud.federated.dp",
    "FLSettings": "medcloud.federated.flower.settings",
    "Ciphertext": "medcloud.federated.he.base",
    "HEBackend": "medcloud.federated.he.base",
    "HEError": "medcloud.federated.he.base",
    "NoSecretKey": "medcloud.federated.he.base",
    "BackendSpec": "medcloud.federated.he.registry",
    "KeygenStep": "medcloud.federated.he.registry",
    "SharedKey": "medcloud.federated.he.registry",
    "backend_names": "medcloud.federated.he.registry",
    "backend_spec": "medcloud.federated.he.registry",
    "register": "medcloud.federated.he.registry",
    "KeyPaths": "medcloud.federated.keyfiles",
    "aggregator_backend": "medcloud.federated.keys",
    "site_backend": "medcloud.federated.keys",
    "DeepProtectServer": "medcloud.federated.protocol",
    "DeepProtectSite": "medcloud.federated.protocol",
    "FedAvgAggregator": "medcloud.federated.protocol",
    "FedAvgSite": "medcloud.federated.protocol",
    "GlobalModel": "medcloud.federated.protocol",
    "RoundStats": "medcloud.federated.protocol",
    "run_fedavg": "medcloud.federated.protocol",
}

__all__ = [
    "BackendSpec",
    "Ciphertext",
    "DPConfig",
    "DeepProtectServer",
    "DeepProtectSite",
    "FLSettings",
    "FedAvgAggregator",
    "FedAvgSite",
    "GlobalModel",
    "HEBackend",
    "HEError",
    "KeyPaths",
    "KeygenStep",
    "NoSecretKey",
    "RoundStats",
    "SharedKey",
    "aggregator_backend",
    "backend_names",
    "backend_spec",
    "register",
    "run_fedavg",
    "site_backend",
]

__getattr__, __dir__ = lazy_face(__name__, _FACE)
