"""Plaintext backend: the same interface with no encryption, the baseline for every comparison."""

from __future__ import annotations

from typing import Any

import numpy as np

from medcloud.federated.he.base import FloatVector, HEBackend
from medcloud.federated.he.registry import BackendSpec, register

__all__ = ["SPEC", "PlaintextBackend"]


class PlaintextBackend(HEBackend):
    """Chunks are float64 numpy arrays; bytes are raw little-endian values (8 bytes per value)."""

    name = "plain"

    def __init__(self, slots: int = 1 << 20) -> None:
        self._slots = slots

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def can_decrypt(self) -> bool:
        return True

    def _encrypt_chunk(self, values: FloatVector) -> Any:
        return values.copy()

    def _decrypt_chunk(self, chunk: Any, length: int) -> FloatVector:
        return np.asarray(chunk[:length], dtype=np.float64)

    def _add_chunk(self, a: Any, b: Any) -> Any:
        return a + b

    def _mul_chunk(self, a: Any, scalar: float) -> Any:
        return a * scalar

    def _chunk_to_bytes(self, chunk: Any) -> bytes:
        return np.asarray(chunk, dtype="<f8").tobytes()

    def _chunk_from_bytes(self, data: bytes) -> Any:
        return np.frombuffer(data, dtype="<f8").copy()


def _plain(_: object = None) -> HEBackend:
    return PlaintextBackend()


SPEC = register(
    BackendSpec(
        "plain",
        "no encryption: the baseline every other mode is measured against (the aggregator reads updates)",
        "aggregator",
        for_site=_plain,
        for_aggregator=_plain,
        in_memory=lambda: (PlaintextBackend(), PlaintextBackend()),
    )
)
