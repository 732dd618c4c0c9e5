"""Homomorphic-encryption backends behind one interface (`HEBackend`), found through a registry.

Each scheme registers a `BackendSpec` from its own module (`registry.py` says how): `plain`
(baseline), `ckks` (TenSEAL, one key shared by the sites: DeepProtect), `aes` (additive
AES-256-CTR, the same trust model) and `threshold` (OpenFHE multiparty CKKS, one key share per
site; in process on CPython 3.10, through a 3.10 sidecar elsewhere: `bridge.py`). This package
loads the interface, the registry and the plaintext backend; a scheme's module loads on its first
lookup (`backend_spec`), since ckks needs `tenseal` and threshold `openfhe`.
"""

from __future__ import annotations

from medcloud.federated.he.base import Ciphertext, HEBackend, HEError, NoSecretKey, split_serialized
from medcloud.federated.he.plain import PlaintextBackend
from medcloud.federated.he.registry import (
    BackendSpec,
    KeygenStep,
    SharedKey,
    backend_names,
    backend_spec,
    modes_where,
    register,
    unregister,
)

__all__ = [
    "BackendSpec",
    "Ciphertext",
    "HEBackend",
    "HEError",
    "KeygenStep",
    "NoSecretKey",
    "PlaintextBackend",
    "SharedKey",
    "backend_names",
    "backend_spec",
    "modes_where",
    "register",
    "split_serialized",
    "unregister",
]
