"""CKKS on TenSEAL (Microsoft SEAL): the shared-key backend of DeepProtect mode.

Parameters (128-bit classical security per the HE standard table, checked at construction):
- `compact` (default): N = 8192 (4096 slots), coefficient moduli [60, 60] bits (one 60-bit data
  prime plus the 60-bit special prime, log2 QP = 120 <= 218), scale 2^40. Additions only.
  Protocols weight updates on the site before encryption, so the aggregator never needs a
  multiplication.
- `depth1`: N = 8192, [60, 40, 60] (log2 QP = 160), scale 2^40: one multiplication by a public
  scalar; 64 bytes per value until the rescale drops a prime (TenSEAL's own per-chunk format).

Wire format of the compact set ("ckks-rns-packed" v2, see `SealRaw`): each ciphertext carries
N = 8192 real values, in the real and the imaginary parts of its 4,096 complex slots (TenSEAL's
vectors use only the real parts); residues mod the 60-bit prime are packed in 60 bits, all chunks
of a vector in one array. A site holds the secret key, so it encrypts symmetrically and sends c0
plus one 32-byte seed that expands to every chunk's c1: 7.5 bytes per value (1.88x float32)
instead of TenSEAL's 32. The aggregator adds c0 arrays mod q
and concatenates the seeds (a sum's c1 is the sum of the seeds' expansions, which anyone can
compute and which reveal nothing: each is public in its upload), so the summed model goes back
at 7.5 bytes per value plus 32 per site. Past `MAX_SEEDS` seeds (DeepProtect's running E(w)) the
aggregator expands them into an explicit c1 (15 bytes per value). Public-key encryptions (the
aggregator's own, in DeepProtect) carry an explicit c1.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenseal as ts
import tenseal.sealapi  # registers the SEAL types (Modulus, ...) that contexts return
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
from medcloud.federated.he.packing import (
    SEED_BYTES,
    U64,
    add_mod,
    expand_sum,
    pack_bits,
    packed_size,
    unpack_bits,
)
from medcloud.federated.he.registry import SharedKey, register
from medcloud.federated.he.sealraw import SealRaw
from medcloud.federated.he.security import check_128_bit
from medcloud.federated.keys import shared_key_spec

PACKED_FORMAT = "ckks-rns-packed"
PACKED_VERSION = 2  # 1: one real value per slot (never released); 2: real and imaginary parts
MAX_SEEDS = 16  # a sum carrying more seeds than this gets an explicit c1 instead


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


@dataclass
class Residues:
    """One encrypted vector at the residue level: c0 per chunk, and c1 = explicit + Σ expand(seed)."""

    c0: U64  # (chunks, N)
    c1: U64 | None = None
    seeds: tuple[bytes, ...] = field(default_factory=tuple)


class CkksBackend(HEBackend):
    """CKKS on SEAL (via TenSEAL); decrypts only when built from a secret context.

    Single-prime parameter sets (the compact default) use the packed, seeded wire format; others
    fall back to TenSEAL's per-chunk vectors.
    """

    name = "ckks"

    def __init__(self, context_bytes: bytes, workers: int = 1) -> None:
        try:
            self._ctx = ts.context_from(context_bytes)
        except Exception as exc:
            raise HEError(f"not a TenSEAL context: {exc}") from exc
        sctx = self._ctx.data.seal_context()
        parms = sctx.first_context_data().parms()
        self._slots = parms.poly_modulus_degree() // 2
        self._raw: Any = None
        if len(parms.coeff_modulus()) == 1:
            secret = self._ctx.secret_key().data if self._ctx.has_secret_key() else None
            public = self._ctx.public_key().data if self._ctx.has_public_key() else None
            self._raw = SealRaw(sctx, self._ctx.global_scale, secret, public)
            self._slots = self._raw.values_per_chunk  # complex packing: N reals per ciphertext
        # SEAL holds the GIL (two threads encrypt no faster than one, measured), so a site with
        # several cores encrypts and decrypts chunk ranges in worker processes instead.
        self._workers = max(1, int(workers)) if self._raw is not None and self.can_decrypt else 1
        self._context_bytes = context_bytes if self._workers > 1 else b""
        self._pool: Any = None

    @property
    def packed(self) -> bool:
        """True where ciphertexts travel as packed residues (single-prime parameter sets)."""
        return self._raw is not None

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

    # --- packed residues (single-prime sets) ------------------------------------------------------

    def _ranges(self, chunks: int) -> list[tuple[int, int]]:
        """Contiguous chunk ranges, one per worker process (one range: run here)."""
        if self._workers <= 1 or chunks < 2 * self._workers:
            return [(0, chunks)]
        edges = np.linspace(0, chunks, self._workers + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]

    def _map(self, fn: Any, jobs: list[tuple[Any, ...]]) -> list[Any]:
        if len(jobs) == 1:
            return [fn(*jobs[0], backend=self)]
        if self._pool is None:
            import multiprocessing
            import weakref
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),  # no fork of SEAL or Ray state
                initializer=_worker_init,
                initargs=(self._context_bytes,),
            )
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        futures = [self._pool.submit(fn, *job) for job in jobs]
        return [f.result() for f in futures]

    def encrypt(self, vector: NDArray[Any]) -> Ciphertext:
        if self._raw is None:
            return super().encrypt(vector)
        flat = encryptable(vector)
        n_chunks = math.ceil(flat.size / self.slots)
        if self.can_decrypt:
            seed = os.urandom(SEED_BYTES)
            jobs = [(flat[a * self.slots : b * self.slots], seed, a) for a, b in self._ranges(n_chunks)]
            c0 = np.concatenate(self._map(_encrypt_range, jobs))
            return Ciphertext(self.name, flat.size, [Residues(c0, None, (seed,))])
        chunks = [flat[i : i + self.slots] for i in range(0, flat.size, self.slots)]
        c0, c1 = self._raw.encrypt_public(chunks)
        return Ciphertext(self.name, flat.size, [Residues(c0, c1)])

    def _residues(self, ct: Ciphertext) -> Residues:
        self._check(ct)
        if len(ct.chunks) != 1 or not isinstance(ct.chunks[0], Residues):
            raise HEError("not a packed CKKS ciphertext")
        res: Residues = ct.chunks[0]
        return res

    def _full_c1(self, res: Residues) -> U64:
        return expand_sum(res.seeds, res.c0.shape[0], res.c0.shape[1], self._raw.q, res.c1)

    def decrypt(self, ct: Ciphertext) -> FloatVector:
        if self._raw is None:
            return super().decrypt(ct)
        res = self._residues(ct)
        if not self.can_decrypt:
            raise NoSecretKey(f"this {self.name} context holds no secret key")
        jobs = []
        for a, b in self._ranges(res.c0.shape[0]):
            c1 = None if res.c1 is None else res.c1[a:b]
            jobs.append((res.c0[a:b], c1, res.seeds, a, min(b * self.slots, ct.length) - a * self.slots))
        return np.concatenate(self._map(_decrypt_range, jobs)).astype(np.float64)

    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        if self._raw is None:
            return super().add(a, b)
        ra, rb = self._residues(a), self._residues(b)
        if a.length != b.length or ra.c0.shape != rb.c0.shape:
            raise HEError(f"length mismatch: {a.length} vs {b.length}")
        q = self._raw.q
        c1 = rb.c1 if ra.c1 is None else ra.c1 if rb.c1 is None else add_mod(ra.c1, rb.c1, q)
        out = Residues(add_mod(ra.c0, rb.c0, q), c1, ra.seeds + rb.seeds)
        if len(out.seeds) > MAX_SEEDS:
            out = Residues(out.c0, self._full_c1(out), ())
        return Ciphertext(self.name, a.length, [out])

    def mul_scalar(self, a: Ciphertext, scalar: float) -> Ciphertext:
        if self._raw is None:
            return super().mul_scalar(a, scalar)
        raise HEError("multiplication needs a parameter set with depth >= 1 (this one adds only)")

    def serialize(self, ct: Ciphertext) -> bytes:
        if self._raw is None:
            return super().serialize(ct)
        res = self._residues(ct)
        raw = self._raw
        extra = {
            "format": PACKED_FORMAT,
            "version": PACKED_VERSION,
            "N": raw.n,
            "q": raw.q,
            "bits": raw.bits,
            "chunks": int(res.c0.shape[0]),
            "values_per_chunk": self.slots,
            "seeds": len(res.seeds),
            "c1": res.c1 is not None,
        }
        blobs = [
            pack_bits(res.c0, raw.bits),
            pack_bits(res.c1, raw.bits) if res.c1 is not None else b"",
            b"".join(res.seeds),
        ]
        return frame(self.name, ct.length, blobs, extra)

    def deserialize(self, data: bytes) -> Ciphertext:
        if self._raw is None:
            return super().deserialize(data)
        head, blobs = split_header(data)
        raw = self._raw
        if head["backend"] != self.name:
            raise HEError(f"ciphertext was made by backend '{head['backend']}', this is '{self.name}'")
        if head.get("format") != PACKED_FORMAT:
            raise HEError("ciphertext is in TenSEAL's per-chunk format; this context uses packed residues")
        if head.get("version") != PACKED_VERSION:
            raise HEError(f"unsupported {PACKED_FORMAT} version {head.get('version')!r}")
        if (head.get("N"), head.get("q"), head.get("bits"), head.get("values_per_chunk")) != (
            raw.n,
            raw.q,
            raw.bits,
            self.slots,
        ):
            raise HEError("ciphertext was made under other CKKS parameters")
        try:
            chunks, n_seeds, has_c1 = int(head["chunks"]), int(head["seeds"]), bool(head["c1"])
        except (KeyError, TypeError, ValueError) as exc:
            raise HEError(f"corrupt ciphertext header: {exc}") from exc
        length = head["length"]
        if length < 1 or chunks != math.ceil(length / self.slots) or len(blobs) != 3:
            raise HEError("corrupt ciphertext header: length, chunks and blobs disagree")
        count = chunks * raw.n
        if len(blobs[2]) != n_seeds * SEED_BYTES or (has_c1 and len(blobs[1]) != packed_size(count, raw.bits)):
            raise HEError("corrupt ciphertext: seed or c1 bytes do not match the header")
        if not has_c1 and (blobs[1] or not n_seeds):
            raise HEError("corrupt ciphertext: no c1 and no seed")
        c0 = unpack_bits(blobs[0], count, raw.bits).reshape(chunks, raw.n)
        c1 = unpack_bits(blobs[1], count, raw.bits).reshape(chunks, raw.n) if has_c1 else None
        for arr in (c0, c1):
            if arr is not None and int(arr.max()) >= raw.q:
                raise HEError("corrupt ciphertext: residue not below q")
        seeds = tuple(blobs[2][i : i + SEED_BYTES] for i in range(0, len(blobs[2]), SEED_BYTES))
        return Ciphertext(self.name, length, [Residues(c0, c1, seeds)])


# --- worker processes (a site's cores) ------------------------------------------------------------

_WORKER: dict[str, CkksBackend] = {}


def _worker_init(context_bytes: bytes) -> None:
    _WORKER["backend"] = CkksBackend(context_bytes)


def _encrypt_range(values: FloatVector, seed: bytes, first: int, backend: CkksBackend | None = None) -> U64:
    """c0 of the chunks `first ..` of a seeded encryption (chunk i's c1 is the seed's stream i)."""
    be = backend or _WORKER["backend"]
    chunks = [values[i : i + be.slots] for i in range(0, values.size, be.slots)]
    c0: U64 = be._raw.encrypt_seeded(chunks, seed, first)
    return c0


def _decrypt_range(
    c0: U64, c1: U64 | None, seeds: tuple[bytes, ...], first: int, length: int, backend: CkksBackend | None = None
) -> FloatVector:
    be = backend or _WORKER["backend"]
    full = expand_sum(seeds, c0.shape[0], c0.shape[1], be._raw.q, c1, first)
    out: FloatVector = be._raw.decrypt(c0, full, length)
    return out


SPEC = register(
    shared_key_spec(
        "ckks",
        "CKKS on TenSEAL, one key shared by the sites (DeepProtect): the aggregator never sees a model",
        # Sealed CKKS keys bind the site alone: they predate the other shared-key schemes.
        SharedKey(generate_context, CkksBackend, public_name="context", seal_domain=""),
        "CKKS",
    )
)
