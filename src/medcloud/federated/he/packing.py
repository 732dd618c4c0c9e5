"""Coefficient packing shared by the CKKS backends: residues mod a b-bit prime stored in b bits
(not 64), and the seed expansion that stands in for a uniformly random polynomial.

A 60-bit prime's residues in 64-bit words waste 4 bits in 64; packing them keeps 60, so a
ciphertext shrinks by 1/16 at no cost in precision. `expand_seed` turns a 32-byte seed into
residues uniform mod q (AES-256-CTR keystream, b-bit masking, rejection of values >= q), the way
SEAL and Kyber derive the public random polynomial of an RLWE sample from a seed; chunk i of a
vector uses stream i, so any range of chunks expands on its own (worker processes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from medcloud.federated.he.base import HEError

U64 = NDArray[np.uint64]
SEED_BYTES = 32


def packed_size(count: int, bits: int) -> int:
    """Bytes `pack_bits` writes for `count` residues of `bits` bits."""
    whole, rest = divmod(bits, 8)
    return count * whole + (count * rest + 7) // 8


def pack_bits(values: U64, bits: int) -> bytes:
    """The low `bits` bits of each value: whole bytes first, then the remaining bits as one bit stream."""
    if not 1 <= bits <= 64:
        raise HEError(f"cannot pack {bits}-bit residues")
    flat = np.ascontiguousarray(values, dtype="<u8").ravel()
    if bits < 64 and flat.size and int(flat.max()) >> bits:
        raise HEError(f"a residue does not fit in {bits} bits")
    whole, rest = divmod(bits, 8)
    by = flat.view(np.uint8).reshape(-1, 8)
    out = [np.ascontiguousarray(by[:, :whole]).tobytes()]
    if rest == 4:
        top = by[:, whole]
        if top.size % 2:
            top = np.append(top, np.uint8(0))
        out.append((top[0::2] | (top[1::2] << 4)).astype(np.uint8).tobytes())
    elif rest:
        top = np.unpackbits(by[:, whole : whole + 1], axis=1, bitorder="little")[:, :rest]
        out.append(np.packbits(top.ravel(), bitorder="little").tobytes())
    return b"".join(out)


def unpack_bits(data: bytes, count: int, bits: int) -> U64:
    """Inverse of `pack_bits`; refuses data of the wrong size."""
    if len(data) != packed_size(count, bits):
        raise HEError(f"packed coefficients: {len(data)} bytes, expected {packed_size(count, bits)}")
    whole, rest = divmod(bits, 8)
    if whole == 8:
        return np.frombuffer(data, dtype="<u8").astype(np.uint64)
    # Overlapping unaligned 64-bit reads at a stride of `whole` bytes, masked to `whole` bytes.
    padded = np.frombuffer(data[: count * whole] + bytes(8), dtype=np.uint8)
    words = np.ndarray(shape=(count,), dtype="<u8", buffer=padded, strides=(whole,))
    out = words & np.uint64((1 << (8 * whole)) - 1)
    if rest:
        raw = np.frombuffer(data, dtype=np.uint8, offset=count * whole)
        if rest == 4:  # two values' top nibbles per byte (60-bit primes): skip the bit stream
            top = np.empty(len(raw) * 2, dtype=np.uint8)
            top[0::2], top[1::2] = raw & 0x0F, raw >> 4
            top = top[:count]
        else:
            bitstream = np.unpackbits(raw, bitorder="little")[: count * rest].reshape(count, rest)
            top = np.packbits(bitstream, axis=1, bitorder="little")[:, 0]
        out |= top.astype(np.uint64) << np.uint64(8 * whole)
    return out.astype(np.uint64, copy=False)


def _masked_stream(seed: bytes, count: int, q: int, stream_id: int) -> tuple[U64, Any]:
    if len(seed) != SEED_BYTES:
        raise HEError("a seed is 32 bytes")
    # One independent AES-CTR stream per chunk (nonce = chunk index), so chunks expand anywhere.
    stream = Cipher(algorithms.AES(seed), modes.CTR(stream_id.to_bytes(8, "big") + bytes(8))).encryptor()
    buf = bytearray(8 * count + 15)  # update_into wants block-size slack
    n = stream.update_into(bytes(8 * count), buf)
    vals = np.frombuffer(buf, dtype="<u8", count=n // 8)
    np.bitwise_and(vals, np.uint64((1 << q.bit_length()) - 1), out=vals)
    return vals, stream


def expand_seed(seed: bytes, count: int, q: int, stream_id: int = 0) -> U64:
    """`count` residues uniform mod q from a 32-byte seed and a stream number (deterministic;
    anyone can expand it)."""
    vals, stream = _masked_stream(seed, count, q, stream_id)
    bad = np.flatnonzero(vals >= np.uint64(q))
    if bad.size:  # probability ~ count * (2^bits - q) / 2^bits: tiny for the primes used here
        mask = np.uint64((1 << q.bit_length()) - 1)
        fill: list[int] = []
        while len(fill) < bad.size:
            more = np.frombuffer(stream.update(bytes(8 * max(64, bad.size))), dtype="<u8") & mask
            fill.extend(int(v) for v in more if v < q)
        vals[bad] = np.asarray(fill[: bad.size], dtype=np.uint64)
    return vals


def expand_chunks(seed: bytes, chunks: int, n: int, q: int, first: int = 0) -> U64:
    """The (chunks, n) residues of chunks first .. first+chunks-1 of one seed."""
    out = np.empty((chunks, n), dtype=np.uint64)
    for i in range(chunks):
        out[i] = expand_seed(seed, n, q, first + i)
    return out


def expand_sum(seeds: Sequence[bytes], chunks: int, n: int, q: int, start: U64 | None = None, first: int = 0) -> U64:
    """(start + Σ expand_chunks(seed)) mod q, reducing once per 15 terms instead of once per term."""
    total = np.zeros((chunks, n), dtype=np.uint64) if start is None else start.reshape(chunks, n).copy()
    pending = 1
    for seed in seeds:
        total += expand_chunks(seed, chunks, n, q, first)  # terms < q < 2^60: 16 cannot wrap 2^64
        pending += 1
        if pending >= 15:
            np.remainder(total, np.uint64(q), out=total)
            pending = 1
    if pending > 1:
        np.remainder(total, np.uint64(q), out=total)
    return total


def add_mod(a: U64, b: U64, q: int) -> U64:
    """(a + b) mod q for residues already below q (q < 2^63, so the sum cannot wrap)."""
    s = a + b
    s -= np.uint64(q) * (s >= np.uint64(q))
    return s


def sub_mod(a: U64, b: U64, q: int) -> U64:
    """(a - b) mod q for residues already below q."""
    return add_mod(a, np.uint64(q) - b, q)
