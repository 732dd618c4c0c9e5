"""The one interface every homomorphic-encryption backend implements.

A model update is a flat float vector of any length. Backends pack it into as many ciphertexts
(chunks) as their slot count requires; callers never see the chunking. Serialized ciphertexts are
opaque bytes with a small self-describing header, so the aggregator can add them without knowing
which library made them.
"""

from __future__ import annotations

import json
import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medcloud.errors import InvalidInput, MedcloudError

MAGIC = b"MCHE1"
FloatVector = NDArray[np.float64]


class HEError(MedcloudError):
    """A homomorphic operation was refused (wrong backend, mismatched lengths, corrupt bytes)."""

    status = 400
    type_slug = "he-error"
    title = "Homomorphic encryption error"
    exit_code = 2


class NoSecretKey(HEError):
    """Decryption was asked of a party that holds no secret key (the aggregator, by design)."""

    status = 403
    type_slug = "no-secret-key"
    title = "No secret key"
    exit_code = 3


@dataclass
class Ciphertext:
    """An encrypted float vector: `length` values packed into library-native chunks."""

    backend: str
    length: int
    chunks: list[Any] = field(default_factory=list)


class HEBackend(ABC):
    """Encrypt, add, scale by a public scalar, serialize and (where a key is held) decrypt vectors."""

    name: str = "abstract"

    @property
    @abstractmethod
    def slots(self) -> int:
        """Values packed into one ciphertext chunk."""

    @property
    @abstractmethod
    def can_decrypt(self) -> bool:
        """True only where this process holds the key (or, for threshold, a share)."""

    @abstractmethod
    def _encrypt_chunk(self, values: FloatVector) -> Any: ...

    @abstractmethod
    def _decrypt_chunk(self, chunk: Any, length: int) -> FloatVector: ...

    @abstractmethod
    def _add_chunk(self, a: Any, b: Any) -> Any: ...

    @abstractmethod
    def _mul_chunk(self, a: Any, scalar: float) -> Any: ...

    @abstractmethod
    def _chunk_to_bytes(self, chunk: Any) -> bytes: ...

    @abstractmethod
    def _chunk_from_bytes(self, data: bytes) -> Any: ...

    def encrypt(self, vector: NDArray[Any]) -> Ciphertext:
        """Encrypt a 1-D float vector of any length (split into `slots`-sized chunks)."""
        flat = encryptable(vector)
        chunks = [self._encrypt_chunk(flat[i : i + self.slots]) for i in range(0, flat.size, self.slots)]
        return Ciphertext(self.name, int(flat.size), chunks)

    def encrypt_public(self, vector: NDArray[Any]) -> Ciphertext:
        """Encrypt a value the encrypting party may reveal (the aggregator's initial model in
        DeepProtect): public-key backends encrypt it; symmetric ones, whose aggregator holds no key,
        give it ciphertext form without a pad."""
        return self.encrypt(vector)

    def refresh_due(self, ct: Ciphertext) -> bool:
        """True when a key holder should replace this (running) ciphertext by a fresh encryption of
        its value: its decryption cost grows with what was added to it (aes: one keystream per
        term). The DeepProtect server asks one site per round to do so."""
        return False

    def decrypt(self, ct: Ciphertext) -> FloatVector:
        """Decrypt to a float64 vector of the original length."""
        self._check(ct)
        if not self.can_decrypt:
            raise NoSecretKey(f"this {self.name} context holds no secret key")
        parts = []
        for i, chunk in enumerate(ct.chunks):
            n = min(self.slots, ct.length - i * self.slots)
            parts.append(self._decrypt_chunk(chunk, n))
        return np.concatenate(parts).astype(np.float64)

    def partial_decrypt(self, ct: Ciphertext) -> bytes:
        """This party's decryption share of `ct` (threshold schemes: `BackendSpec.threshold`)."""
        raise HEError(f"{self.name} has no key shares: only a threshold scheme makes partial decryptions")

    def fuse(self, shares: list[bytes]) -> FloatVector:
        """The plaintext from every key share's partial decryption (threshold schemes)."""
        raise HEError(f"{self.name} has no key shares: only a threshold scheme fuses partial decryptions")

    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """Element-wise sum of two encrypted vectors of equal length."""
        self._check(a)
        self._check(b)
        if a.length != b.length:
            raise HEError(f"length mismatch: {a.length} vs {b.length}")
        return Ciphertext(self.name, a.length, [self._add_chunk(x, y) for x, y in zip(a.chunks, b.chunks, strict=True)])

    def sum(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        """Sum of one or more encrypted vectors."""
        if not cts:
            raise HEError("nothing to sum")
        total = cts[0]
        for ct in cts[1:]:
            total = self.add(total, ct)
        return total

    def sum_serialized(self, blobs: Sequence[bytes]) -> bytes:
        """Sum of serialized ciphertexts, serialized (the aggregator's one job); backends may do it
        without materialising library objects."""
        return self.serialize(self.sum([self.deserialize(b) for b in blobs]))

    def mul_scalar(self, a: Ciphertext, scalar: float) -> Ciphertext:
        """Multiply every element by a public scalar (needs a parameter set with depth >= 1)."""
        self._check(a)
        return Ciphertext(self.name, a.length, [self._mul_chunk(x, float(scalar)) for x in a.chunks])

    def serialize(self, ct: Ciphertext) -> bytes:
        """Self-describing bytes (see `frame`)."""
        self._check(ct)
        return frame(self.name, ct.length, [self._chunk_to_bytes(c) for c in ct.chunks])

    def deserialize(self, data: bytes) -> Ciphertext:
        """Inverse of `serialize`; refuses bytes made by another backend or cut short."""
        backend, length, blobs = split_serialized(data)
        if backend != self.name:
            raise HEError(f"ciphertext was made by backend '{backend}', this is '{self.name}'")
        return Ciphertext(self.name, length, [self._chunk_from_bytes(b) for b in blobs])

    def _check(self, ct: Ciphertext) -> None:
        if ct.backend != self.name:
            raise HEError(f"ciphertext of backend '{ct.backend}' given to '{self.name}'")


def frame(backend: str, length: int, blobs: Sequence[bytes | memoryview], extra: dict[str, Any] | None = None) -> bytes:
    """Magic, header length, JSON header (backend, length, chunk sizes, any `extra` fields, e.g. a
    format name and version), then the chunk bytes."""
    header: dict[str, Any] = {"backend": backend, "length": length, "sizes": [memoryview(b).nbytes for b in blobs]}
    header.update(extra or {})
    head = json.dumps(header).encode()
    return b"".join([MAGIC, struct.pack(">I", len(head)), head, *blobs])


def split_header(data: bytes, copy: bool = True) -> tuple[dict[str, Any], list[Any]]:
    """The JSON header and the blobs of a serialized ciphertext, without touching any HE library
    (`copy=False`: the blobs are memoryviews into `data`, not copies)."""
    if len(data) < len(MAGIC) + 4 or not data.startswith(MAGIC):
        raise HEError("not a medcloud ciphertext (bad magic)")
    (head_len,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start : start + head_len])
        if not isinstance(header, dict):
            raise TypeError("header is not an object")
        header["backend"] = str(header["backend"])
        header["length"] = int(header["length"])
        sizes = [int(s) for s in header["sizes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise HEError(f"corrupt ciphertext header: {exc}") from exc
    if header["length"] < 0 or any(s < 0 for s in sizes):
        raise HEError("corrupt ciphertext header: negative size")
    pos = start + head_len
    if pos + sum(sizes) != len(data):
        raise HEError("ciphertext truncated or padded")
    view = data if copy else memoryview(data)
    blobs = []
    for size in sizes:
        blobs.append(view[pos : pos + size])
        pos += size
    return header, blobs


def split_serialized(data: bytes) -> tuple[str, int, list[bytes]]:
    """Parse the framing of a serialized ciphertext: (backend, length, blobs)."""
    header, blobs = split_header(data)
    return header["backend"], header["length"], blobs


def encryptable(vector: NDArray[Any]) -> FloatVector:
    """A contiguous flat float64 view, refusing what no backend may encrypt."""
    flat = np.ascontiguousarray(np.asarray(vector, dtype=np.float64).ravel())
    if flat.size == 0:
        raise HEError("cannot encrypt an empty vector")
    if not np.all(np.isfinite(flat)):
        raise HEError("cannot encrypt NaN or infinite values")
    return flat


def as_vector(values: NDArray[Any] | Sequence[float]) -> FloatVector:
    """A flat float64 copy, refusing anything that is not numeric."""
    try:
        return np.asarray(values, dtype=np.float64).ravel().copy()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"not a numeric vector: {exc}") from exc
