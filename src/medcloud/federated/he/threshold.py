"""Threshold CKKS on OpenFHE: every site holds one secret-key share; decryption needs all N.

Key generation is a chain: the first party runs `KeyGen`, each next party runs
`MultipartyKeyGen(previous public key)`; the last public key is the joint key everyone encrypts
under. Its secret is the sum of all shares, which no single process ever holds. Decryption is
one partial decryption per party (`MultipartyDecryptLead` for the first, `...Main` for the
others) fused by anyone: fewer than N partials decode to noise (N-of-N threshold).

Parameters: CKKS-RNS, ring dimension N = 8192 (4096 slots) chosen by OpenFHE for
`HEStd_128_classic`, multiplicative depth 0 (additions only), first modulus 60 bits,
scale 2^50, FIXEDMANUAL rescaling. `ThresholdParams(depth=1)` allows one multiplication by a
public scalar (N = 16384). A ciphertext is ~32 bytes per value, a partial decryption ~16.

OpenFHE's PyPI wheel imports only on CPython 3.10 (see docs/federated.md): import this module
only where `openfhe` is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import openfhe as ofhe

from medcloud.federated.he.base import (
    Ciphertext,
    FloatVector,
    HEBackend,
    HEError,
    NoSecretKey,
    frame,
    split_serialized,
)

SHARE_BACKEND = "threshold-share"


@dataclass(frozen=True)
class ThresholdParams:
    depth: int = 0
    scaling_mod_size: int = 50
    first_mod_size: int = 60

    def describe(self, ring_dimension: int, log_q: float) -> dict[str, Any]:
        return {
            "scheme": "CKKS-RNS multiparty (threshold N-of-N)",
            "library": "OpenFHE",
            "N": ring_dimension,
            "log_q": round(log_q),
            "depth": self.depth,
            "scale": f"2^{self.scaling_mod_size}",
            "security": "HEStd_128_classic (OpenFHE enforces the HE standard table)",
        }


def generate_context(params: ThresholdParams | None = None) -> bytes:
    """A fresh crypto context (public parameters only), made by the first party."""
    params = params or ThresholdParams()
    p = ofhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(params.depth)
    p.SetScalingModSize(params.scaling_mod_size)
    p.SetFirstModSize(params.first_mod_size)
    p.SetSecurityLevel(ofhe.SecurityLevel.HEStd_128_classic)
    p.SetScalingTechnique(ofhe.ScalingTechnique.FIXEDMANUAL)
    cc = ofhe.GenCryptoContext(p)
    for feature in (
        ofhe.PKESchemeFeature.PKE,
        ofhe.PKESchemeFeature.KEYSWITCH,
        ofhe.PKESchemeFeature.LEVELEDSHE,
        ofhe.PKESchemeFeature.MULTIPARTY,
    ):
        cc.Enable(feature)
    return bytes(ofhe.Serialize(cc, ofhe.BINARY))


def load_context(context_bytes: bytes) -> Any:
    try:
        return ofhe.DeserializeCryptoContextString(context_bytes, ofhe.BINARY)
    except Exception as exc:
        raise HEError(f"not an OpenFHE crypto context: {exc}") from exc


def keygen_share(context_bytes: bytes, previous_public_key: bytes | None) -> tuple[bytes, bytes]:
    """One link of the key chain: (this party's public key, this party's secret share).

    The first party passes None; each next party passes the previous party's public key. The
    public key of the last party is the joint encryption key.
    """
    cc = load_context(context_bytes)
    if previous_public_key is None:
        kp = cc.KeyGen()
    else:
        prev = ofhe.DeserializePublicKeyString(previous_public_key, ofhe.BINARY)
        kp = cc.MultipartyKeyGen(prev)
    return bytes(ofhe.Serialize(kp.publicKey, ofhe.BINARY)), bytes(ofhe.Serialize(kp.secretKey, ofhe.BINARY))


class ThresholdBackend(HEBackend):
    """Encrypt under the joint key; with a share, make partial decryptions; fuse all N of them."""

    name = "threshold"

    def __init__(
        self,
        context_bytes: bytes,
        joint_public_key: bytes,
        secret_share: bytes | None = None,
        lead: bool = False,
    ) -> None:
        self._cc = load_context(context_bytes)
        self._pk = ofhe.DeserializePublicKeyString(joint_public_key, ofhe.BINARY)
        self._share = ofhe.DeserializePrivateKeyString(secret_share, ofhe.BINARY) if secret_share is not None else None
        self._lead = lead
        self._slots = int(self._cc.GetRingDimension()) // 2

    def describe(self, params: ThresholdParams | None = None) -> dict[str, Any]:
        params = params or ThresholdParams()
        return params.describe(int(self._cc.GetRingDimension()), math.log2(self._cc.GetModulus()))

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def can_decrypt(self) -> bool:
        # Nobody can decrypt alone: a share only yields a partial decryption.
        return False

    @property
    def holds_share(self) -> bool:
        return self._share is not None

    def _encrypt_chunk(self, values: FloatVector) -> Any:
        pt = self._cc.MakeCKKSPackedPlaintext(values.tolist())
        return self._cc.Encrypt(self._pk, pt)

    def _decrypt_chunk(self, chunk: Any, length: int) -> FloatVector:
        raise NoSecretKey("threshold decryption needs the partial decryptions of all parties")

    def _add_chunk(self, a: Any, b: Any) -> Any:
        return self._cc.EvalAdd(a, b)

    def _mul_chunk(self, a: Any, scalar: float) -> Any:
        try:
            return self._cc.Rescale(self._cc.EvalMult(a, scalar))
        except RuntimeError as exc:
            raise HEError(f"multiplication needs ThresholdParams(depth >= 1) ({exc})") from exc

    def _chunk_to_bytes(self, chunk: Any) -> bytes:
        return bytes(ofhe.Serialize(chunk, ofhe.BINARY))

    def _chunk_from_bytes(self, data: bytes) -> Any:
        try:
            return ofhe.DeserializeCiphertextString(data, ofhe.BINARY)
        except Exception as exc:
            raise HEError(f"corrupt OpenFHE ciphertext: {exc}") from exc

    def decrypt(self, ct: Ciphertext) -> FloatVector:
        raise NoSecretKey("threshold decryption needs the partial decryptions of all parties")

    def partial_decrypt(self, ct: Ciphertext) -> bytes:
        """This party's decryption share of `ct` (useless without every other party's)."""
        self._check(ct)
        if self._share is None:
            raise NoSecretKey("this process holds no key share")
        fn = self._cc.MultipartyDecryptLead if self._lead else self._cc.MultipartyDecryptMain
        parts = [fn([chunk], self._share)[0] for chunk in ct.chunks]
        blobs = [self._chunk_to_bytes(p) for p in parts]
        return frame(SHARE_BACKEND, ct.length, blobs)

    def fuse(self, shares: list[bytes]) -> FloatVector:
        """Combine the partial decryptions of all parties into the plaintext vector."""
        if not shares:
            raise HEError("no decryption shares")
        parsed = [split_serialized(s) for s in shares]
        lengths = {length for _, length, _ in parsed}
        if any(b != SHARE_BACKEND for b, _, _ in parsed) or len(lengths) != 1:
            raise HEError("decryption shares of different ciphertexts")
        length = lengths.pop()
        n_chunks = len(parsed[0][2])
        out = []
        for i in range(n_chunks):
            partials = [self._chunk_from_bytes(blobs[i]) for _, _, blobs in parsed]
            try:
                pt = self._cc.MultipartyDecryptFusion(partials)
            except RuntimeError as exc:
                raise HEError(f"fusion failed: the shares of all parties are needed ({exc})") from exc
            n = min(self._slots, length - i * self._slots)
            pt.SetLength(n)
            out.append(np.asarray(pt.GetRealPackedValue(), dtype=np.float64)[:n])
        return np.concatenate(out)
