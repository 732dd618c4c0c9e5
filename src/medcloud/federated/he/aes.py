"""Additively homomorphic symmetric encryption on AES-256-CTR: the fast shared-key backend.

The scheme is counter-mode additive encryption (Castelluccia, Mykletun and Tsudik, "Efficient
aggregation of encrypted data in wireless sensor networks", MobiQuitous 2005), with the PRF
instantiated by AES-256 in counter mode from `cryptography` (OpenSSL). A value x is encoded in
fixed point, q = round(x * 2^f) in Z_{2^64}, and encrypted as

    c = q + KS(k, nonce)  (mod 2^64)

where KS is the AES-CTR keystream read as little-endian 64-bit words and the nonce is 96 random
bits (counter from 0). Ciphertexts add in Z_{2^64}: the sum of uploads is the sum of the values
plus the sum of their keystreams. A ciphertext therefore carries its *terms*, the public nonces
and integer coefficients of the keystreams in it, and a key holder decrypts by subtracting
sum(coef * KS(k, nonce)). Multiplying by a public scalar multiplies the value and the
coefficients.

Security: with the key secret, every ciphertext is the value plus a fresh pseudorandom pad
(IND-CPA if AES is a PRF and nonces never repeat; 96 random bits per encryption), so the
aggregator, which holds no key, learns nothing from any upload or sum. The trust model is
DeepProtect's: one key shared by the sites. Like every homomorphic scheme it is malleable
(the aggregator can add values it chose), so the transport is authenticated (TLS, tokens).

Why next to CKKS: for sums, the work per value is one AES block per two values plus a few
integer operations, about 100x less than a lattice encryption, and 8 bytes per value (2x float32;
CKKS packed 1.88x, DeepProtect's LWE about 2.4x). Not post-quantum in the lattice sense, but
AES-256 keeps 128-bit security against Grover's search.

Range: a site refuses values with |x| >= 2^(63 - f - headroom) (default f = 32, headroom = 10:
|x| < 2^21). Every ciphertext carries a public *bound* on the magnitude of the fixed-point values
inside it (a fresh encryption: 2^(63 - headroom) - 1, whatever the value, so the bound says nothing
about it); sums add bounds and scalars multiply them, and an operation whose bound would leave the
signed 64-bit range is refused instead of wrapping. A key holder checks on reading that the bound
covers every keystream term. Precision: 2^-33 absolute per value per party (rounding), exact
addition after that. Vectors are limited to 2^32 values, far below the 2^33 words one nonce's
32-bit block counter can pad, so no pad is ever reused within a vector.

Error messages never carry a value derived from a secret (a plaintext or a decrypted sum): the
aggregator may see a site's error text, and a message with the offending value would be an oracle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from medcloud.federated.he.base import (
    Ciphertext,
    FloatVector,
    HEBackend,
    HEError,
    NoSecretKey,
    encryptable,
    frame,
    split_header,
)
from medcloud.federated.he.registry import SharedKey, register
from medcloud.federated.keys import shared_key_spec

FORMAT = "aes-ctr-additive"
VERSION = 1  # of the key material
CT_VERSION = 2  # of ciphertexts: v2 carries the public bound
SCHEME = "AES-256-CTR additive (Castelluccia-Mykletun-Tsudik)"
NONCE_BYTES = 12
KEY_BYTES = 32
DEFAULT_FRAC_BITS = 32
DEFAULT_HEADROOM_BITS = 10
DEFAULT_REFRESH_TERMS = 32  # DeepProtect's running E(w): ask a site for a fresh one past this
SCALAR_BITS = 16  # precision of a non-integer public scalar in mul_scalar
MAX_SCALE_BITS = 56
MAX_LENGTH = 1 << 32  # values per vector; one nonce pads 2^33 words before its counter wraps
INT64_MAX = 2**63 - 1  # the largest |fixed-point value| a sum may hold (two's complement in Z_2^64)
SCRATCH_MAX_BYTES = 64 << 20  # per-thread work arrays up to this size are kept between calls
_ZEROS = bytes(4 << 20)  # AES-CTR encrypts zeros into the keystream, 4 MiB at a time
_ZEROS_VIEW = memoryview(_ZEROS)
U64 = NDArray[np.uint64]


@dataclass(frozen=True)
class AesParams:
    frac_bits: int = DEFAULT_FRAC_BITS
    headroom_bits: int = DEFAULT_HEADROOM_BITS
    refresh_terms: int = DEFAULT_REFRESH_TERMS

    def __post_init__(self) -> None:
        if not (8 <= self.frac_bits <= 48 and 0 <= self.headroom_bits <= 20 and self.refresh_terms >= 2):
            raise HEError(
                "aes parameters out of range (8 <= frac_bits <= 48, 0 <= headroom_bits <= 20, refresh_terms >= 2)"
            )

    @property
    def max_abs(self) -> float:
        """The largest magnitude a site may encrypt."""
        return float(2 ** (63 - self.frac_bits - self.headroom_bits))

    @property
    def fresh_bound(self) -> int:
        """The public bound of a fresh encryption: |round(x * 2^f)| <= 2^(63 - headroom) - 1."""
        return int(2 ** (63 - self.headroom_bits)) - 1

    def describe(self, key_id: str = "") -> dict[str, Any]:
        return {
            "scheme": SCHEME,
            "library": "cryptography (OpenSSL AES-NI)",
            "ring": "Z_2^64",
            "frac_bits": self.frac_bits,
            "headroom_bits": self.headroom_bits,
            "max_abs_value": self.max_abs,
            "refresh_terms": self.refresh_terms,
            "security": "256-bit key (128-bit against Grover), IND-CPA with 96-bit random nonces",
            **({"key_id": key_id} if key_id else {}),
        }


def key_id_of(key: bytes) -> str:
    """A public fingerprint of the key (sites and aggregator check that they share one)."""
    return hashlib.sha256(b"medcloud-fl-aes-key-id|" + key).hexdigest()[:16]


def generate_key(params: AesParams | None = None) -> tuple[bytes, bytes]:
    """A fresh shared key: (secret bytes, public bytes). Both are JSON; only the secret has the key."""
    params = params or AesParams()
    key = os.urandom(KEY_BYTES)
    common = {
        "format": FORMAT,
        "version": VERSION,
        "frac_bits": params.frac_bits,
        "headroom_bits": params.headroom_bits,
        "refresh_terms": params.refresh_terms,
    }
    secret = json.dumps({**common, "key": key.hex()}).encode()
    public = json.dumps({**common, "key_id": key_id_of(key)}).encode()
    return secret, public


@dataclass
class Masked:
    """One encrypted vector: fixed-point values plus pads, and the pads' (nonce, coefficient) terms."""

    values: U64
    scale_bits: int
    terms: dict[bytes, int]  # nonce -> coefficient mod 2^64
    bound: int  # public: |every fixed-point value| <= bound <= INT64_MAX


def _signed(coef: int) -> int:
    """A coefficient mod 2^64 read as a two's-complement integer."""
    return coef - 2**64 if coef >= 2**63 else coef


class AesCtrBackend(HEBackend):
    """Built from the secret JSON (a site: encrypts and decrypts) or the public JSON (the aggregator:
    adds and scales only)."""

    name = "aes"

    def __init__(self, material: bytes) -> None:
        try:
            doc = json.loads(material)
            if doc.get("format") != FORMAT or int(doc.get("version", 0)) != VERSION:
                raise ValueError(f"not {FORMAT} v{VERSION} key material")
            refresh = int(doc.get("refresh_terms", DEFAULT_REFRESH_TERMS))
            self.params = AesParams(int(doc["frac_bits"]), int(doc["headroom_bits"]), refresh)
            key = bytes.fromhex(doc["key"]) if "key" in doc else None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HEError(f"unreadable aes key material: {exc}") from exc
        if key is not None and len(key) != KEY_BYTES:
            raise HEError(f"aes key must be {KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self.key_id = key_id_of(key) if key is not None else str(doc.get("key_id", ""))
        if not self.key_id:
            raise HEError("aes public material lacks key_id")
        self._local = threading.local()  # per-thread scratch arrays (fresh 8 MB arrays page-fault)

    @property
    def slots(self) -> int:
        return 1 << 40  # one chunk holds any vector

    @property
    def can_decrypt(self) -> bool:
        return self._key is not None

    def describe(self) -> dict[str, Any]:
        return self.params.describe(self.key_id)

    # --- keystream ------------------------------------------------------------------------------

    def _keystream(self, nonce: bytes, n: int, out: U64 | None = None) -> U64:
        """KS(k, nonce) as n words, written into `out` (n + 2 words, for OpenSSL's spare block)."""
        if self._key is None:
            raise NoSecretKey("this aes context holds no secret key")
        if out is None or out.size < n + 2:
            out = np.empty(n + 2, dtype=np.uint64)
        enc = Cipher(algorithms.AES(self._key), modes.CTR(nonce + b"\0\0\0\0")).encryptor()
        dest, nbytes = out.data.cast("B"), 8 * n
        for start in range(0, nbytes, len(_ZEROS)):  # the stream continues across pieces
            size = min(len(_ZEROS), nbytes - start)
            enc.update_into(_ZEROS_VIEW[:size], dest[start:])
        return out[:n]

    def _scratch(self, name: str, n: int, dtype: type[np.generic]) -> NDArray[Any]:
        """A per-thread work array of n items, reused across calls (up to SCRATCH_MAX_BYTES)."""
        if n * np.dtype(dtype).itemsize > SCRATCH_MAX_BYTES:
            return np.empty(n, dtype=dtype)
        buf = getattr(self._local, name, None)
        if buf is None or buf.size < n:
            buf = np.empty(n, dtype=dtype)
            setattr(self._local, name, buf)
        return buf[:n]

    def _unpad(self, m: Masked, n: int) -> U64:
        """values - sum(coef * KS(nonce)), in this thread's scratch (valid until its next call)."""
        if not m.terms:
            return m.values
        plain: U64 = self._scratch("plain", n, np.uint64)
        scratch: U64 = self._scratch("keystream", n + 2, np.uint64)
        first = True
        for nonce, coef in m.terms.items():
            ks = self._keystream(nonce, n, scratch)
            if coef != 1:
                np.multiply(ks, np.uint64(coef), out=ks)
            np.subtract(m.values if first else plain, ks, out=plain)
            first = False
        return plain

    def _fixed(self, vector: NDArray[Any]) -> U64:
        """round(x * 2^f) in Z_2^64 (a fresh array), refusing NaN, infinities and out-of-range values.

        The range check is done in floating point on the values as given (an int64 minimum has no
        positive twin in int64), and its message names the public range only, never the value.
        """
        arr = np.asarray(vector)
        if arr.dtype.kind not in "fiu":
            arr = encryptable(arr)  # converts, or refuses what is not numeric
        flat = arr.ravel()
        if flat.size == 0:
            raise HEError("cannot encrypt an empty vector")
        if flat.size > MAX_LENGTH:
            raise HEError(f"cannot encrypt more than {MAX_LENGTH} values in one vector")
        peak = max(-float(flat.min()), float(flat.max()))  # negated as a float: -int64_min overflows in int64
        if not math.isfinite(peak):
            raise HEError("cannot encrypt NaN or infinite values")
        refused = HEError(f"a value is out of the aes backend's range (|x| < {self.params.max_abs:.4g})")
        if peak >= self.params.max_abs:
            raise refused
        scaled = self._scratch("scaled", flat.size, np.float64)
        np.multiply(flat, float(2**self.params.frac_bits), out=scaled)
        q = np.empty(flat.size, dtype=np.int64)
        np.rint(scaled, out=q, casting="unsafe")
        if max(-int(q.min()), int(q.max())) > self.params.fresh_bound:  # rounding up to 2^(63-h) itself
            raise refused
        return q.view(np.uint64)

    # --- the interface --------------------------------------------------------------------------

    def encrypt(self, vector: NDArray[Any]) -> Ciphertext:
        if self._key is None:
            raise NoSecretKey("this aes context holds no secret key; use encrypt_public for public values")
        q = self._fixed(vector)
        nonce = os.urandom(NONCE_BYTES)
        np.add(q, self._keystream(nonce, q.size, self._scratch("keystream", q.size + 2, np.uint64)), out=q)
        masked = Masked(q, self.params.frac_bits, {nonce: 1}, self.params.fresh_bound)
        return Ciphertext(self.name, int(q.size), [masked])

    def encrypt_public(self, vector: NDArray[Any]) -> Ciphertext:
        """A value everyone may know (an initial model the aggregator chose), in ciphertext form with
        no pad: adding site ciphertexts to it hides the result again."""
        q = self._fixed(vector)
        bound = int(np.max(np.abs(q.view(np.int64))))  # public values: their own bound
        return Ciphertext(self.name, int(q.size), [Masked(q, self.params.frac_bits, {}, bound)])

    def refresh_due(self, ct: Ciphertext) -> bool:
        return len(self._one(ct).terms) >= self.params.refresh_terms

    def decrypt(self, ct: Ciphertext) -> FloatVector:
        m = self._one(ct)
        if self._key is None:
            raise NoSecretKey("this aes context holds no secret key")
        self._check_bound(m)
        out = np.empty(ct.length, dtype=np.float64)
        np.multiply(self._unpad(m, ct.length).view(np.int64), 2.0 ** (-m.scale_bits), out=out)
        return out

    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        return self._sum([a, b])

    def sum(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        if not cts:
            raise HEError("nothing to sum")
        return self._sum(cts)

    def sum_serialized(self, blobs: Sequence[bytes]) -> bytes:
        if not blobs:
            raise HEError("nothing to sum")
        return self.serialize(self._sum([self.deserialize(b) for b in blobs]))

    def mul_scalar(self, a: Ciphertext, scalar: float) -> Ciphertext:
        """Integer scalars are exact; others are rounded to 16 fractional bits, which adds 16 to the
        ciphertext's scale (sums need equal scales)."""
        m = self._one(a)
        s = float(scalar)
        if not math.isfinite(s):
            raise HEError("cannot multiply by NaN or infinity")
        extra = 0 if s.is_integer() else SCALAR_BITS
        k = round(s * 2**extra)
        bound = m.bound * abs(k)
        if m.scale_bits + extra > MAX_SCALE_BITS or bound > INT64_MAX:
            raise HEError(
                f"multiplying by {s} would leave the aes backend's range (bound {m.bound} x {abs(k)} > 2^63 - 1)"
            )
        factor = k % 2**64
        values = m.values * np.uint64(factor)
        terms = {nonce: (coef * factor) % 2**64 for nonce, coef in m.terms.items()}
        return Ciphertext(self.name, a.length, [Masked(values, m.scale_bits + extra, terms, bound)])

    def serialize(self, ct: Ciphertext) -> bytes:
        m = self._one(ct)
        extra = {
            "format": FORMAT,
            "version": CT_VERSION,
            "key_id": self.key_id,
            "scale_bits": m.scale_bits,
            "bound": m.bound,
            "terms": [[nonce.hex(), coef] for nonce, coef in m.terms.items()],
        }
        body = np.ascontiguousarray(m.values, dtype="<u8")
        return frame(self.name, ct.length, [body.data.cast("B")], extra)  # one copy: into the frame

    def deserialize(self, data: bytes) -> Ciphertext:
        header, blobs = split_header(data, copy=False)
        if header["backend"] != self.name:
            raise HEError(f"ciphertext was made by backend '{header['backend']}', this is '{self.name}'")
        if header.get("format") != FORMAT or header.get("version") != CT_VERSION:
            raise HEError(f"unsupported aes ciphertext format {header.get('format')!r} v{header.get('version')!r}")
        if header.get("key_id") != self.key_id:
            raise HEError(f"ciphertext is under aes key {header.get('key_id')!r}, this party holds {self.key_id!r}")
        n = header["length"]
        if not isinstance(n, int) or not 0 < n <= MAX_LENGTH:
            raise HEError(f"aes ciphertext length must be 1..{MAX_LENGTH}")
        if len(blobs) != 1 or len(blobs[0]) != 8 * n:
            raise HEError("aes ciphertext body does not match its declared length")
        try:
            scale = int(header["scale_bits"])
            bound = header["bound"]
            if not isinstance(bound, int) or not 0 <= bound <= INT64_MAX:
                raise ValueError("bound outside 0..2^63-1")
            terms: dict[bytes, int] = {}
            for nonce_hex, coef in header["terms"]:
                nonce = bytes.fromhex(nonce_hex)
                if len(nonce) != NONCE_BYTES or not (0 <= int(coef) < 2**64) or nonce in terms:
                    raise ValueError("bad term")
                terms[nonce] = int(coef)
        except (KeyError, TypeError, ValueError) as exc:
            raise HEError(f"corrupt aes ciphertext header: {exc}") from exc
        if not 0 <= scale <= MAX_SCALE_BITS:
            raise HEError(f"corrupt aes ciphertext header: scale 2^{scale}")
        values = np.frombuffer(blobs[0], dtype="<u8")  # read-only view: operations copy
        masked = Masked(values, scale, terms, bound)
        if sum(abs(_signed(c)) for c in terms.values()) * self.params.fresh_bound > bound:
            # Each term stands for a site's encryption scaled by its coefficient: the bound must cover them.
            raise HEError("aes ciphertext bound is smaller than its terms allow (tampered or corrupt)")
        return Ciphertext(self.name, n, [masked])

    # --- helpers --------------------------------------------------------------------------------

    def _one(self, ct: Ciphertext) -> Masked:
        self._check(ct)
        if len(ct.chunks) != 1 or not isinstance(ct.chunks[0], Masked) or ct.chunks[0].values.size != ct.length:
            raise HEError("not an aes ciphertext")
        return ct.chunks[0]

    def _check_bound(self, m: Masked) -> None:
        if m.bound > INT64_MAX:
            raise HEError("aes ciphertext bound exceeds 2^63 - 1: its sum may have wrapped")

    def _sum(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        parts = [self._one(ct) for ct in cts]
        length = cts[0].length
        if any(ct.length != length for ct in cts):
            raise HEError(f"length mismatch: {sorted({ct.length for ct in cts})}")
        scales = {m.scale_bits for m in parts}
        if len(scales) != 1:
            raise HEError(f"cannot add ciphertexts of different scales: {sorted(scales)}")
        bound = sum(m.bound for m in parts)
        if bound > INT64_MAX:
            # Refuse rather than wrap: past 2^(headroom) fresh summands the sum could overflow Z_2^64.
            raise HEError(
                f"summing these {len(parts)} ciphertexts could overflow the aes backend's range "
                f"(bound {bound} > 2^63 - 1; at most {2**self.params.headroom_bits} fresh uploads per sum)"
            )
        values = np.add(parts[0].values, parts[1].values) if len(parts) > 1 else parts[0].values.copy()
        for m in parts[2:]:
            np.add(values, m.values, out=values)
        terms = dict(parts[0].terms)
        for m in parts[1:]:
            for nonce, coef in m.terms.items():
                terms[nonce] = (terms.get(nonce, 0) + coef) % 2**64
        return Ciphertext(
            self.name, length, [Masked(values, parts[0].scale_bits, {k: c for k, c in terms.items() if c}, bound)]
        )

    # Chunk-level hooks of the base class: this backend overrides the vector-level methods above.
    def _encrypt_chunk(self, values: FloatVector) -> Any:
        return self._one(self.encrypt(values))

    def _decrypt_chunk(self, chunk: Any, length: int) -> FloatVector:
        return self.decrypt(Ciphertext(self.name, length, [chunk]))

    def _add_chunk(self, a: Any, b: Any) -> Any:
        return self._one(
            self._sum([Ciphertext(self.name, a.values.size, [a]), Ciphertext(self.name, b.values.size, [b])])
        )

    def _mul_chunk(self, a: Any, scalar: float) -> Any:
        return self._one(self.mul_scalar(Ciphertext(self.name, a.values.size, [a]), scalar))

    def _chunk_to_bytes(self, chunk: Any) -> bytes:
        return self.serialize(Ciphertext(self.name, chunk.values.size, [chunk]))

    def _chunk_from_bytes(self, data: bytes) -> Any:
        return self._one(self.deserialize(data))


SPEC = register(
    shared_key_spec(
        "aes",
        "additive AES-256-CTR, one key shared by the sites (DeepProtect's trust model): the fast one",
        SharedKey(generate_key, AesCtrBackend),
        "AES",
        weight_unit=1024.0,  # a hard fixed-point range: see FedAvgSite.weight_unit
    )
)
