"""SEAL ciphertexts as numpy residue arrays (single-prime CKKS level), through `tenseal.sealapi`.

TenSEAL serializes a ciphertext as two full polynomials (zstd-compressed 64-bit words, which
saves nothing on uniform residues). To send less, the backend needs the residues themselves:
`tenseal.sealapi` saves and loads SEAL objects only through file paths, so this module moves
them through a private temporary folder (tmpfs where there is one, mode 0700) and parses SEAL's
own framing (16-byte header, optional zstd, then the object's members with the coefficient
array last). The layout is taken from a ciphertext SEAL itself wrote and checked by a round trip
when the object is built; anything unexpected raises `HEError` rather than guessing.

Seeded encryption (what SEAL's `encrypt_symmetric` returning a `Serializable` does in C++, which
the Python binding cannot serialize): a site that holds the secret key s makes a fresh
symmetric encryption (c0', a') of m, then replaces a' by a = expand(seed):
c0 = c0' + (a' - a)·s = Δm + e - a·s, computed by SEAL's own decryptor on the ciphertext
(c0', a' - a), whose "decryption" is exactly c0' + (a' - a)·s. The pair (c0, seed) is a
symmetric RLWE encryption of m with the same noise SEAL drew; the seed replaces half the bytes.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from medcloud.federated.he.base import FloatVector, HEError
from medcloud.federated.he.packing import U64, expand_chunks

SEAL_MAGIC = b"\x5e\xa1"
HEADER = 16
COMPR_NONE, COMPR_ZSTD = 0, 2


def _private_dir() -> str:
    # mkdtemp makes a fresh folder only this user can enter (0700), so a shared parent is safe;
    # tmpfs keeps the per-chunk files off the disk.
    shm = "/dev/shm"  # noqa: S108
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix="medcloud-seal-", dir=base)


def _payload(blob: bytes) -> tuple[bytes, bytes]:
    """(header, uncompressed members) of one SEAL-saved object."""
    if len(blob) < HEADER or not blob.startswith(SEAL_MAGIC) or blob[2] != HEADER:
        raise HEError("not a SEAL object (bad header)")
    (size,) = struct.unpack("<Q", blob[8:16])
    if size != len(blob):
        raise HEError("SEAL object truncated")
    body = blob[HEADER:]
    if blob[5] == COMPR_NONE:
        return blob[:HEADER], body
    if blob[5] == COMPR_ZSTD:
        import imagecodecs  # a core dependency (image codecs); it carries zstd

        return blob[:HEADER], bytes(imagecodecs.zstd_decode(body))
    raise HEError(f"SEAL compression mode {blob[5]} not supported")


class SealRaw:
    """Residue-level access to the first (and only) data level of a CKKS context."""

    def __init__(self, seal_context: Any, scale: float, secret_key: Any | None, public_key: Any | None) -> None:
        self.sctx = seal_context
        data = seal_context.first_context_data()
        parms = data.parms()
        moduli = parms.coeff_modulus()
        if len(moduli) != 1:
            raise HEError("residue access needs a single-prime ciphertext level")
        self.q = int(moduli[0].value())
        self.bits = int(moduli[0].bit_count())
        self.n = int(parms.poly_modulus_degree())
        # CKKS slots are complex: N/2 of them carry N real values (real and imaginary parts).
        self.values_per_chunk = self.n
        self.scale = float(scale)
        self.encoder = sealapi.CKKSEncoder(seal_context)
        self.evaluator = sealapi.Evaluator(seal_context)
        self.sym = sealapi.Encryptor(seal_context, secret_key) if secret_key is not None else None
        self.dec = sealapi.Decryptor(seal_context, secret_key) if secret_key is not None else None
        self.asym = sealapi.Encryptor(seal_context, public_key) if public_key is not None else None
        self._dir = _private_dir()
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._learn_layout()

    # --- SEAL framing ---------------------------------------------------------------------------

    def _path(self, kind: str) -> str:
        return str(Path(self._dir) / f"{kind}-{threading.get_ident()}")

    def _save(self, obj: Any, kind: str) -> bytes:
        path = self._path(kind)
        obj.save(path)
        return Path(path).read_bytes()

    def _learn_layout(self) -> None:
        ct = self._fresh_ciphertext([0.5 + 0.5j] * 4)
        head, body = _payload(self._save(ct, "ct"))
        span = 2 * self.n * 8
        if len(body) <= span:
            raise HEError("unexpected SEAL ciphertext layout")
        self._ct_prefix = body[: len(body) - span]
        self._version = head[3:5]
        c0, c1 = self._ct_polys(body)
        again = self._ct_polys(_payload(self._save(self.load_ciphertext(c0, c1), "ct"))[1])
        if not (np.array_equal(again[0], c0) and np.array_equal(again[1], c1)):
            raise HEError("SEAL ciphertext layout not understood (round trip differs)")

    def _ct_polys(self, body: bytes) -> tuple[U64, U64]:
        if len(body) != len(self._ct_prefix) + 2 * self.n * 8 or not body.startswith(self._ct_prefix):
            raise HEError("SEAL ciphertext of another level, size or scale")
        arr = np.frombuffer(body, dtype="<u8", offset=len(self._ct_prefix)).astype(np.uint64)
        return arr[: self.n], arr[self.n :]

    def load_ciphertext(self, c0: U64, c1: U64) -> Any:
        """A SEAL ciphertext made of two residue arrays (each < q, length N)."""
        body = (
            self._ct_prefix
            + np.ascontiguousarray(c0, dtype="<u8").tobytes()
            + np.ascontiguousarray(c1, dtype="<u8").tobytes()
        )
        head = SEAL_MAGIC + bytes([HEADER]) + self._version + bytes([COMPR_NONE, 0, 0])
        path = self._path("in")
        Path(path).write_bytes(head + struct.pack("<Q", HEADER + len(body)) + body)
        ct = sealapi.Ciphertext(self.sctx)
        try:
            ct.load(self.sctx, path)
        except Exception as exc:  # SEAL refuses residues >= q, wrong sizes, other parameters
            raise HEError(f"SEAL refused the ciphertext: {exc}") from exc
        return ct

    def _plain_poly(self, pt: Any) -> U64:
        body = _payload(self._save(pt, "pt"))[1]
        span = self.n * 8
        if len(body) < span:
            raise HEError("unexpected SEAL plaintext layout")
        return np.frombuffer(body, dtype="<u8", offset=len(body) - span).astype(np.uint64)

    # --- encryption -----------------------------------------------------------------------------

    def _encode(self, values: FloatVector) -> Any:
        """Values 0 .. N/2-1 in the real parts of the N/2 complex slots, N/2 .. N-1 in the imaginary."""
        half = self.n // 2
        padded = np.zeros(self.n, dtype=np.float64)
        padded[: values.size] = values
        pt = sealapi.Plaintext()
        self.encoder.encode((padded[:half] + 1j * padded[half:]).tolist(), self.scale, pt)
        return pt

    def _fresh_ciphertext(self, values: list[complex]) -> Any:
        ct = sealapi.Ciphertext(self.sctx)
        pt = sealapi.Plaintext()
        self.encoder.encode(values, self.scale, pt)
        if self.sym is not None:
            self.sym.encrypt_symmetric(pt, ct)
        elif self.asym is not None:
            self.asym.encrypt(pt, ct)
        else:
            raise HEError("this context can neither encrypt nor decrypt")
        return ct

    def encrypt_seeded(self, chunks: list[FloatVector], seed: bytes, first: int = 0) -> U64:
        """c0 of each chunk's seeded symmetric encryption (chunk i's c1 = stream first+i of the
        seed); needs the secret key."""
        if self.sym is None or self.dec is None:
            raise HEError("seeded encryption needs the secret key")
        a = expand_chunks(seed, len(chunks), self.n, self.q, first)
        zero = np.zeros(self.n, dtype=np.uint64)
        out = np.empty((len(chunks), self.n), dtype=np.uint64)
        ct = sealapi.Ciphertext(self.sctx)
        pt = sealapi.Plaintext()
        for i, values in enumerate(chunks):
            self.sym.encrypt_symmetric(self._encode(values), ct)  # (c0', a')
            self.evaluator.sub_inplace(ct, self.load_ciphertext(zero, a[i]))  # (c0', a' - a)
            self.dec.decrypt(ct, pt)  # c0' + (a' - a)·s
            out[i] = self._plain_poly(pt)
        return out

    def encrypt_public(self, chunks: list[FloatVector]) -> tuple[U64, U64]:
        """(c0, c1) of public-key encryptions (the aggregator's, in DeepProtect)."""
        if self.asym is None:
            raise HEError("this context holds no public key")
        c0 = np.empty((len(chunks), self.n), dtype=np.uint64)
        c1 = np.empty_like(c0)
        ct = sealapi.Ciphertext(self.sctx)
        for i, values in enumerate(chunks):
            self.asym.encrypt(self._encode(values), ct)
            c0[i], c1[i] = self._ct_polys(_payload(self._save(ct, "ct"))[1])
        return c0, c1

    def decrypt(self, c0: U64, c1: U64, length: int) -> FloatVector:
        """The first `length` values of the chunks (c0[i], c1[i])."""
        if self.dec is None:
            raise HEError("no secret key")
        pt = sealapi.Plaintext()
        parts = []
        for i in range(c0.shape[0]):
            self.dec.decrypt(self.load_ciphertext(c0[i], c1[i]), pt)
            z = np.asarray(self.encoder.decode_complex(pt), dtype=np.complex128)
            n = min(self.values_per_chunk, length - i * self.values_per_chunk)
            parts.append(np.concatenate([z.real, z.imag])[:n])
        return np.concatenate(parts)
