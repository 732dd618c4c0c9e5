"""Threshold CKKS on OpenFHE: every site holds one secret-key share; decryption needs all N.

Key generation is a chain: the first party runs `KeyGen`, each next party runs
`MultipartyKeyGen(previous public key)`; the last public key is the joint key everyone encrypts
under. Its secret is the sum of all shares, which no single process ever holds. Decryption is
one partial decryption per party (`MultipartyDecryptLead` for the first, `...Main` for the
others) fused by anyone: fewer than N partials decode to noise (N-of-N threshold).

t-of-N (OpenFHE's "threshold FHE with aborts"): after key generation each party Shamir-shares
its secret share among the other N - 1 parties (`share_key`, polynomial of degree t - 1 per
coefficient, party i's share is the evaluation at i). If a party drops out, any t of the others
pool the shares they hold of its key and one of them rebuilds it (`recover_key`: Lagrange
interpolation in OpenFHE's `RecoverSharedKey`) to make the missing partial decryption; fewer than
t shares are refused, and t - 1 shares are uniformly random (Shamir). OpenFHE requires an honest
majority, N / 2 < t, and with the missing party's own point absent t <= N - 1: so 2-of-3,
3-of-4, 3-of-5, 4-of-5. Share bytes travel inside an OpenFHE ciphertext container (its one
element replaced by the share polynomial), since the binding serializes no bare `DCRTPoly`.

Parameters: CKKS-RNS, ring dimension N = 8192 (4096 slots) chosen by OpenFHE for
`HEStd_128_classic`, multiplicative depth 0 (additions only), first modulus 60 bits,
scale 2^50, FIXEDMANUAL rescaling. `ThresholdParams(depth=1)` allows one multiplication by a
public scalar (N = 16384). On the wire (`openfhe-rns-packed`: one chunk header per vector,
residues in 60 bits) a ciphertext is 30 bytes per value, a partial decryption 15.

Speed: OpenFHE deserializes a ciphertext chunk in ~4 ms (it rebuilds the crypto parameters
carried in every chunk), which made the aggregator's sums and the fusion of N partial
decryptions dominate a round. Additions and the fusion's sum are coefficient-wise additions
mod q, so `RnsLayout` adds the serialized coefficient arrays directly with numpy, after checking
that every blob has the same header bytes, and checks its first result against OpenFHE's own
`EvalAdd`/fusion; anything unexpected falls back to OpenFHE objects.

OpenFHE's PyPI wheel imports only on CPython 3.10 (see docs/federated.md): import this module
only where `openfhe` is installed. The threshold scheme therefore registers in `bridge.py`, which
imports everywhere and uses this module in process or in a 3.10 sidecar.

Its length: key generation, t-of-N sharing and recovery, and the backend all act on the same OpenFHE
context and are only correct together.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import openfhe as ofhe

from medcloud.federated.he.base import (
    MAGIC,
    Ciphertext,
    FloatVector,
    HEBackend,
    HEError,
    NoSecretKey,
    frame,
    split_header,
    split_serialized,
)
from medcloud.federated.he.packing import pack_bits, unpack_bits

SHARE_BACKEND = "threshold-share"
KEY_SHARE_KIND = "threshold-keyshare"  # a Shamir share of one party's secret share (secret!)
PACKED_FORMAT = "openfhe-rns-packed"
PACKED_VERSION = 1


@dataclass(frozen=True)
class RnsLayout:
    """Where the coefficient arrays lie in one serialized chunk (single-tower RNS, N coefficients
    per polynomial), and the modulus q they are reduced by."""

    size: int
    windows: tuple[int, ...]  # byte offsets of each polynomial's N little-endian uint64 values
    ring_dimension: int
    q: int

    @property
    def mask(self) -> np.ndarray:
        """True for header bytes (outside every coefficient window)."""
        m = np.ones(self.size, dtype=bool)
        for w in self.windows:
            m[w : w + 8 * self.ring_dimension] = False
        return m

    @classmethod
    def detect(cls, a: bytes, b: bytes, ring_dimension: int, approx_q: float, polys: int) -> RnsLayout | None:
        """Find the layout from two different chunks of the same kind; None if it is not the simple one."""
        if len(a) != len(b):
            return None
        span = 8 * ring_dimension
        tag = struct.pack("<Q", ring_dimension)  # cereal writes each vector's length before it
        tags, i = [], a.find(tag)
        while i >= 0:
            tags.append(i)
            i = a.find(tag, i + 1)
        windows: list[int] = []
        end = len(a)
        for t in reversed(tags):  # coefficient vectors come last; each window ends before the next
            if t + 8 + span <= end:
                windows.append(t + 8)
                end = t
                if len(windows) == polys:
                    break
        if len(windows) != polys:
            return None
        windows.reverse()
        layout_mask = np.ones(len(a), dtype=bool)
        for w in windows:
            layout_mask[w : w + span] = False
        diff = np.frombuffer(a, dtype=np.uint8) != np.frombuffer(b, dtype=np.uint8)
        if diff[layout_mask].any():
            return None  # the two chunks differ outside the coefficient arrays: not understood
        header = bytes(np.frombuffer(a, dtype=np.uint8)[layout_mask])
        candidates = {
            int.from_bytes(header[j : j + 8], "little")
            for j in range(len(header) - 7)
            if abs(int.from_bytes(header[j : j + 8], "little") - approx_q) < 2**16
        }
        odd = [c for c in candidates if c % 2 == 1]
        if len(odd) != 1:
            return None
        q = odd[0]
        for blob in (a, b):
            arr = np.frombuffer(blob, dtype=np.uint8)
            for w in windows:
                if arr[w : w + span].copy().view("<u8").max() >= q:
                    return None
        return cls(len(a), tuple(windows), ring_dimension, q)

    @property
    def bits(self) -> int:
        return self.q.bit_length()

    def pack(self, kind: str, length: int, chunks: Sequence[bytes]) -> bytes | None:
        """One copy of the chunk header plus every coefficient at q's bit width; None where the
        chunks do not share this layout and header."""
        if not chunks or any(len(c) != self.size for c in chunks):
            return None
        arr = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(len(chunks), self.size)
        mask = self.mask
        if not (arr[:, mask] == arr[0, mask]).all():
            return None
        span = 8 * self.ring_dimension
        coeffs = np.stack([np.ascontiguousarray(arr[:, w : w + span]).view("<u8") for w in self.windows], axis=1)
        if int(coeffs.max()) >= self.q:
            return None
        extra = {
            "format": PACKED_FORMAT,
            "version": PACKED_VERSION,
            "size": self.size,
            "windows": list(self.windows),
            "N": self.ring_dimension,
            "q": self.q,
            "chunks": len(chunks),
        }
        return frame(kind, length, [bytes(arr[0, mask]), pack_bits(coeffs, self.bits)], extra)

    @staticmethod
    def unpack(header: dict[str, Any], blobs: list[bytes], ring_dimension: int, approx_q: float) -> list[bytes]:
        """The OpenFHE chunk bytes of a packed frame, checked against this context's N and q."""
        try:
            size, n, q = int(header["size"]), int(header["chunks"]), int(header["q"])
            windows = [int(w) for w in header["windows"]]
            ring = int(header["N"])
        except (KeyError, TypeError, ValueError) as exc:
            raise HEError(f"corrupt packed OpenFHE header: {exc}") from exc
        if header.get("version") != PACKED_VERSION:
            raise HEError(f"unsupported {PACKED_FORMAT} version {header.get('version')!r}")
        if ring != ring_dimension or abs(q - approx_q) >= 2**16 or q % 2 == 0:
            raise HEError("ciphertext was made under other OpenFHE parameters")
        span = 8 * ring
        edges = sorted(windows)
        if (
            len(blobs) != 2
            or n < 1
            or not windows
            or edges[0] < 0
            or edges[-1] + span > size
            or any(b - a < span for a, b in itertools.pairwise(edges))
        ):
            raise HEError("corrupt packed OpenFHE header: windows, size and blobs disagree")
        layout = RnsLayout(size, tuple(windows), ring, q)
        mask = layout.mask
        if len(blobs[0]) != int(mask.sum()):
            raise HEError("corrupt packed OpenFHE ciphertext: header bytes do not match the layout")
        coeffs = unpack_bits(blobs[1], n * len(windows) * ring, layout.bits).reshape(n, len(windows), ring)
        if int(coeffs.max()) >= q:
            raise HEError("corrupt packed OpenFHE ciphertext: residue not below q")
        out = np.empty((n, size), dtype=np.uint8)
        out[:, mask] = np.frombuffer(blobs[0], dtype=np.uint8)
        for i, w in enumerate(windows):
            out[:, w : w + span] = coeffs[:, i, :].astype("<u8").view(np.uint8).reshape(n, span)
        return [row.tobytes() for row in out]

    def add(self, blobs: Sequence[bytes]) -> bytes | None:
        """The framed sum of framed blobs of equal shape, or None where a header differs."""
        parsed = [split_serialized(b) for b in blobs]
        n = len(parsed[0][2])
        if any(len(p[2]) != n or any(len(c) != self.size for c in p[2]) for p in parsed):
            return None
        arrays = [np.frombuffer(b, dtype=np.uint8, offset=len(b) - n * self.size).reshape(n, self.size) for b in blobs]
        mask = self.mask
        first = arrays[0]
        if any(not np.array_equal(arr[:, mask], first[:, mask]) for arr in arrays[1:]):
            return None
        out = first.copy()
        span = 8 * self.ring_dimension
        q = np.uint64(self.q)
        for w in self.windows:
            acc = np.ascontiguousarray(first[:, w : w + span]).view("<u8").copy()
            for arr in arrays[1:]:
                acc += np.ascontiguousarray(arr[:, w : w + span]).view("<u8")
                acc -= q * (acc >= q)
            out[:, w : w + span] = acc.view(np.uint8)
        head = blobs[0][: len(blobs[0]) - n * self.size]
        return head + out.tobytes()


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


def check_threshold(parties: int, threshold: int) -> None:
    """Refuse a t-of-N that OpenFHE cannot share or that could never recover a missing party."""
    if threshold == parties and parties >= 1:
        return  # N-of-N: no sharing
    if parties < 3 or not parties // 2 < threshold < parties:
        raise HEError(
            f"threshold {threshold} of {parties} parties is not supported: t-of-N needs N >= 3 and "
            f"N/2 < t <= N - 1 (OpenFHE requires an honest majority; t = N is plain N-of-N)"
        )


def _share_container(cc: Any, secret: Any) -> Any:
    """An empty ciphertext of this context, used only as a serialization envelope for a polynomial."""
    return cc.Encrypt(secret, cc.MakeCKKSPackedPlaintext([0.0])).CloneEmpty()


def share_key(context_bytes: bytes, secret_share: bytes, parties: int, threshold: int, index: int) -> dict[int, bytes]:
    """Shamir shares of this party's secret share, one for each other party.

    `index` is this party's 1-based place in the key chain; the result maps each other party's
    1-based index to its share (secret: seal it to that party before it leaves the site). All
    N - 1 shares come from one polynomial, so they must be made in one call.
    """
    check_threshold(parties, threshold)
    if threshold == parties:
        raise HEError("N-of-N keys are not shared (choose t < N)")
    if not 1 <= index <= parties:
        raise HEError(f"party index {index} outside 1..{parties}")
    cc = load_context(context_bytes)
    sk = ofhe.DeserializePrivateKeyString(secret_share, ofhe.BINARY)
    try:
        polys = cc.ShareKeys(sk, parties, threshold, index, "shamir")
    except RuntimeError as exc:
        raise HEError(f"OpenFHE refused to share the key: {exc}") from exc
    envelope = _share_container(cc, sk)
    out: dict[int, bytes] = {}
    for j, poly in sorted(polys.items()):
        env = envelope.Clone()
        env.SetElements([poly])
        meta = {"of": index, "holder": int(j), "N": parties, "t": threshold}
        out[int(j)] = frame(KEY_SHARE_KIND, 0, [bytes(ofhe.Serialize(env, ofhe.BINARY))], meta)
    return out


def key_share_meta(blob: bytes) -> dict[str, int]:
    """Whose key a share belongs to, which party holds it, and the t-of-N it was made for."""
    header, blobs = split_header(blob)
    if header.get("backend") != KEY_SHARE_KIND or len(blobs) != 1:
        raise HEError("not a threshold key share")
    try:
        return {k: int(header[k]) for k in ("of", "holder", "N", "t")}
    except (KeyError, TypeError, ValueError) as exc:
        raise HEError(f"corrupt threshold key share header: {exc}") from exc


def recover_key(context_bytes: bytes, shares: Sequence[bytes]) -> bytes:
    """The secret share of a missing party, rebuilt from at least t of its Shamir shares.

    Every share must be of the same party's key under the same t-of-N, from distinct holders;
    fewer than t are refused with `HEError` (t - 1 of them say nothing about the key).
    """
    if not shares:
        raise HEError("no key shares to recover from")
    metas = [key_share_meta(b) for b in shares]
    first = metas[0]
    if any((m["of"], m["N"], m["t"]) != (first["of"], first["N"], first["t"]) for m in metas):
        raise HEError("key shares of different parties or of a different t-of-N")
    holders = [m["holder"] for m in metas]
    if len(set(holders)) != len(holders) or first["of"] in holders:
        raise HEError("key shares must come from distinct holders other than the missing party")
    parties, threshold = first["N"], first["t"]
    check_threshold(parties, threshold)
    if len(shares) < threshold:
        raise HEError(
            f"{len(shares)} key share(s) of party {first['of']}: recovery needs {threshold} of {parties} parties"
        )
    cc = load_context(context_bytes)
    polys = {}
    for m, blob in zip(metas, shares, strict=True):
        try:
            env = ofhe.DeserializeCiphertextString(split_header(blob)[1][0], ofhe.BINARY)
            (poly,) = env.GetElements()
        except Exception as exc:
            raise HEError(f"corrupt threshold key share from party {m['holder']}: {exc}") from exc
        polys[m["holder"]] = poly
    recovered = ofhe.PrivateKey(cc)
    try:
        cc.RecoverSharedKey(recovered, polys, parties, threshold, "shamir")
    except RuntimeError as exc:
        raise HEError(f"key recovery refused: {exc}") from exc
    return bytes(ofhe.Serialize(recovered, ofhe.BINARY))


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
        self._layouts: dict[str, RnsLayout | None] = {}  # per kind; None: fast path refused

    def _layout(self, kind: str, a: bytes, b: bytes, polys: int) -> RnsLayout | None:
        if kind not in self._layouts:
            self._layouts[kind] = RnsLayout.detect(
                a, b, int(self._cc.GetRingDimension()), float(self._cc.GetModulus()), polys
            )
        return self._layouts[kind]

    def _fast_sum(self, kind: str, blobs: Sequence[bytes], polys: int) -> bytes | None:
        """Coefficient-wise sum mod q of serialized chunks; None where it does not apply."""
        if len(blobs) < 2 or not all(b.startswith(MAGIC) for b in blobs):
            return None
        first = split_serialized(blobs[0])
        second = split_serialized(blobs[1])
        if first[0] != kind or second[0] != kind or first[1] != second[1] or not first[2] or not second[2]:
            return None
        layout = self._layout(kind, first[2][0], second[2][0], polys)
        return layout.add(blobs) if layout is not None else None

    def _legacy(self, data: bytes) -> bytes:
        """Packed or not, the frame with one OpenFHE blob per chunk (what the fast paths read)."""
        header, blobs = split_header(data)
        if header.get("format") is None:
            return data
        if header["format"] != PACKED_FORMAT:
            raise HEError(f"unknown ciphertext format {header['format']!r}")
        chunks = RnsLayout.unpack(header, blobs, int(self._cc.GetRingDimension()), float(self._cc.GetModulus()))
        return frame(header["backend"], header["length"], chunks)

    def _packed(self, data: bytes, polys: int) -> bytes:
        """The compact frame where the chunks share one layout (else the per-chunk frame as is)."""
        kind, length, chunks = split_serialized(data)
        key = f"pack-{kind}"
        if key not in self._layouts and len(chunks) >= 2:
            self._layouts[key] = RnsLayout.detect(
                chunks[0], chunks[1], int(self._cc.GetRingDimension()), float(self._cc.GetModulus()), polys
            )
        layout = self._layouts.get(key)
        packed = layout.pack(kind, length, chunks) if layout is not None else None
        return packed if packed is not None else data

    def serialize(self, ct: Ciphertext) -> bytes:
        return self._packed(super().serialize(ct), polys=2)

    def deserialize(self, data: bytes) -> Ciphertext:
        return super().deserialize(self._legacy(data))

    def sum_serialized(self, blobs: Sequence[bytes]) -> bytes:
        return self._packed(self._sum_frames([self._legacy(b) for b in blobs]), polys=2)

    def _sum_frames(self, blobs: Sequence[bytes]) -> bytes:
        fast = self._fast_sum(self.name, blobs, polys=2)
        if fast is not None and self._layouts.get("checked-ct") is None:
            # First use: the fast sum of the first chunk must equal OpenFHE's EvalAdd, byte for byte.
            slow = self._chunk_to_bytes(
                self.sum([self._chunk_from_bytes_ct(split_serialized(b)[2][0]) for b in blobs]).chunks[0]
            )
            if slow != split_serialized(fast)[2][0]:
                self._layouts[self.name] = None
                fast = None
            self._layouts["checked-ct"] = self._layouts.get(self.name)
        if fast is not None:
            return fast
        # HEBackend's own (de)serialization, named: a bare super() in a comprehension fails on 3.10.
        return HEBackend.serialize(self, self.sum([HEBackend.deserialize(self, b) for b in blobs]))

    def _chunk_from_bytes_ct(self, data: bytes) -> Ciphertext:
        return Ciphertext(self.name, self._slots, [self._chunk_from_bytes(data)])

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
        try:
            return self._cc.EvalAdd(a, b)
        except RuntimeError as exc:  # e.g. a corrupt upload whose encoding field no longer matches
            raise HEError(f"ciphertexts do not add (corrupt or foreign upload?): {exc}") from exc

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
        return self._packed(frame(SHARE_BACKEND, ct.length, blobs), polys=1)

    def fuse(self, shares: list[bytes]) -> FloatVector:
        """Combine the partial decryptions of all parties into the plaintext vector."""
        if not shares:
            raise HEError("no decryption shares")
        shares = [self._legacy(s) for s in shares]
        parsed = [split_serialized(s) for s in shares]
        lengths = {length for _, length, _ in parsed}
        if any(b != SHARE_BACKEND for b, _, _ in parsed) or len(lengths) != 1:
            raise HEError("decryption shares of different ciphertexts")
        length = lengths.pop()
        n_chunks = len(parsed[0][2])
        if any(len(blobs) != n_chunks for _, _, blobs in parsed):
            raise HEError("decryption shares of different ciphertexts")
        # Fusion is the sum of the partials followed by decoding: add them as arrays, decode once.
        combined = self._fast_sum(SHARE_BACKEND, shares, polys=1)
        if combined is not None and "checked-share" not in self._layouts:
            slow = self._fuse_chunk([[self._chunk_from_bytes(blobs[0]) for _, _, blobs in parsed]], 0, length)
            fast = self._fuse_chunk([[self._chunk_from_bytes(split_serialized(combined)[2][0])]], 0, length)
            self._layouts["checked-share"] = self._layouts.get(SHARE_BACKEND)
            # OpenFHE's CKKS decoding adds its own small noise, so two decodings never agree bit for
            # bit; a wrong layout gives garbage (or a decoding failure), far beyond this tolerance.
            if not np.allclose(slow, fast, rtol=1e-6, atol=1e-4):
                self._layouts[SHARE_BACKEND] = self._layouts["checked-share"] = None
                combined = None
        if combined is not None:
            groups = [[self._chunk_from_bytes(c)] for c in split_serialized(combined)[2]]
        else:
            groups = [[self._chunk_from_bytes(blobs[i]) for _, _, blobs in parsed] for i in range(n_chunks)]
        return np.concatenate([self._fuse_chunk(groups, i, length) for i in range(n_chunks)])

    def _fuse_chunk(self, groups: list[list[Any]], i: int, length: int) -> FloatVector:
        try:
            pt = self._cc.MultipartyDecryptFusion(groups[i])
        except RuntimeError as exc:
            raise HEError(f"fusion failed: the shares of all parties are needed ({exc})") from exc
        n = min(self._slots, length - i * self._slots)
        pt.SetLength(n)
        return np.asarray(pt.GetRealPackedValue(), dtype=np.float64)[:n]
