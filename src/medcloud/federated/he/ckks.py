"""CKKS on TenSEAL (Microsoft SEAL): the shared-key backend of DeepProtect mode.

Parameters (128-bit classical security per the HE standard table, checked at construction):
- `compact` (default): N = 8192 (4096 slots), coefficient moduli [60, 60] bits (one 60-bit data
  prime plus the 60-bit special prime, log2 QP = 120 <= 218), scale 2^40. Additions only; a
  ciphertext is 32 bytes per value (8x float32). Protocols weight updates on the site before
  encryption, so the aggregator never needs a multiplication.
- `depth1`: N = 8192, [60, 40, 60] (log2 QP = 160), scale 2^40: one multiplication by a public
  scalar; 64 bytes per value until the rescale drops a prime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts

from medcloud.federated.he.base import FloatVector, HEBackend, HEError, NoSecretKey
from medcloud.federated.he.security import check_128_bit


@dataclass(frozen=True)
class CkksParams:
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60)
    scale_bits: int = 40

    @property
    def log_qp(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    def describe(self) -> dict[str, Any]:
        return {
            "scheme": "CKKS",
            "library": f"TenSEAL {ts.__version__}",
            "N": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "log_qp": self.log_qp,
            "scale": f"2^{self.scale_bits}",
            "security": "128-bit classical (HE standard, ternary secret)",
        }


PRESETS: dict[str, CkksParams] = {
    "compact": CkksParams(),
    "depth1": CkksParams(coeff_mod_bit_sizes=(60, 40, 60)),
}


def generate_context(params: CkksParams | None = None) -> tuple[bytes, bytes]:
    """A fresh key: (secret context bytes, public context bytes without the secret key)."""
    params = params or PRESETS["compact"]
    check_128_bit(params.poly_modulus_degree, params.log_qp)
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    ctx.global_scale = 2.0**params.scale_bits
    secret = ctx.serialize(save_secret_key=True)
    ctx.make_context_public()
    return secret, ctx.serialize()


class CkksBackend(HEBackend):
    """TenSEAL CKKS vectors; decrypts only when built from a secret context."""

    name = "ckks"

    def __init__(self, context_bytes: bytes) -> None:
        try:
            self._ctx = ts.context_from(context_bytes)
        except Exception as exc:
            raise HEError(f"not a TenSEAL context: {exc}") from exc
        self._slots = self._ctx.data.seal_context().first_context_data().parms().poly_modulus_degree() // 2

    @classmethod
    def generate(cls, params: CkksParams | None = None) -> CkksBackend:
        secret, _ = generate_context(params)
        return cls(secret)

    @property
    def slots(self) -> int:
        return int(self._slots)

    @property
    def can_decrypt(self) -> bool:
        return bool(self._ctx.has_secret_key())

    def public_context(self) -> bytes:
        """This context's bytes without the secret key (what the aggregator gets)."""
        return bytes(self._ctx.serialize(save_secret_key=False))

    def _encrypt_chunk(self, values: FloatVector) -> Any:
        return ts.ckks_vector(self._ctx, values.tolist())

    def _decrypt_chunk(self, chunk: Any, length: int) -> FloatVector:
        try:
            return np.asarray(chunk.decrypt(), dtype=np.float64)[:length]
        except ValueError as exc:
            raise NoSecretKey(str(exc)) from exc

    def _add_chunk(self, a: Any, b: Any) -> Any:
        return a + b

    def _mul_chunk(self, a: Any, scalar: float) -> Any:
        try:
            return a * scalar
        except ValueError as exc:
            raise HEError(f"multiplication needs a parameter set with depth >= 1 ({exc})") from exc

    def _chunk_to_bytes(self, chunk: Any) -> bytes:
        return bytes(chunk.serialize())

    def _chunk_from_bytes(self, data: bytes) -> Any:
        try:
            return ts.ckks_vector_from(self._ctx, data)
        except Exception as exc:
            raise HEError(f"corrupt CKKS ciphertext: {exc}") from exc
