"""Homomorphic-encryption backends behind one interface (`HEBackend`).

`plain` (baseline), `ckks` (TenSEAL, one key shared by the sites: DeepProtect) and `threshold`
(OpenFHE multiparty CKKS, one key share per site; CPython 3.10 only). Import a backend module only
when it is used: the threshold one needs `openfhe`.
"""

from __future__ import annotations

from medcloud.federated.he.base import Ciphertext, HEBackend, HEError, NoSecretKey, split_serialized
from medcloud.federated.he.plain import PlaintextBackend

__all__ = ["Ciphertext", "HEBackend", "HEError", "NoSecretKey", "PlaintextBackend", "split_serialized"]
