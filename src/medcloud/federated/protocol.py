"""The protocols, independent of transport: Flower apps and in-process runs share this code.

FedAvg with encrypted weighted weights (weight transmission, Phong et al. TIFS 2019): each
site uploads E(n_k · w_k) once per round; the aggregator adds ciphertexts. What happens to
the sum depends on the backend:
- plain: the aggregator divides by Σn_k itself (baseline).
- ckks: the aggregator cannot decrypt; it sends the encrypted sum and Σn_k back and every site
  decrypts the new global model (the aggregator never sees a model).
- threshold: every site returns a partial decryption of the sum; fusing all of them yields
  Σn_k·w_k, so the aggregator learns the average model but no single site's update, even
  together with all but one of the sites.

DeepProtect (Phong et al. TIFS 2018): the aggregator holds the model encrypted, E(w). A site
downloads E(w), decrypts it, computes a gradient on local data and uploads E(-η·g); the
aggregator adds it to E(w). Sites may run asynchronously: an update computed on an older
version is applied as long as it is at most `max_staleness` versions behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from medcloud.errors import Conflict, InvalidInput
from medcloud.federated.dp import DPConfig, privatise
from medcloud.federated.he.base import HEBackend

Vector = NDArray[np.float64]
TrainFn = Callable[[Vector], Vector]
GradFn = Callable[[Vector], Vector]


def encode_plain(weights: Vector) -> bytes:
    return np.asarray(weights, dtype="<f8").tobytes()


def decode_plain(data: bytes) -> Vector:
    return np.frombuffer(data, dtype="<f8").astype(np.float64)


@dataclass
class GlobalModel:
    """What the aggregator hands to sites: the plaintext average, or the encrypted weighted sum."""

    encrypted: bool
    payload: bytes
    total_weight: float = 1.0
    version: int = 0

    @property
    def size(self) -> int:
        return len(self.payload)


# --- FedAvg -------------------------------------------------------------------------------------


class FedAvgAggregator:
    """Adds the sites' encrypted weighted weights; holds public material only."""

    def __init__(self, backend: HEBackend) -> None:
        self.backend = backend

    @property
    def mode(self) -> str:
        return self.backend.name

    def aggregate(self, uploads: Sequence[bytes]) -> bytes:
        """Homomorphic sum of the uploads, serialized."""
        if not uploads:
            raise InvalidInput("no site uploads to aggregate")
        return self.backend.sum_serialized(uploads)

    def finish(self, summed: bytes, total_weight: float, version: int, shares: Sequence[bytes] = ()) -> GlobalModel:
        """Turn the sum into the next global model (see the module docstring for each mode)."""
        be = self.backend
        if be.name == "plain":
            avg = be.decrypt(be.deserialize(summed)) / total_weight
            return GlobalModel(False, encode_plain(avg), 1.0, version)
        if be.name == "threshold":
            fuse = getattr(be, "fuse")  # noqa: B009 - ThresholdBackend only
            avg = np.asarray(fuse(list(shares)), dtype=np.float64) / total_weight
            return GlobalModel(False, encode_plain(avg), 1.0, version)
        return GlobalModel(True, summed, total_weight, version)


@dataclass
class FedAvgSite:
    """One hospital: trains locally, uploads E(n · w), decrypts (or partially decrypts) results."""

    name: str
    backend: HEBackend
    train: TrainFn
    n_examples: int
    dp: DPConfig | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def open_global(self, model: GlobalModel) -> Vector:
        """The global weights this site starts the round from."""
        if not model.encrypted:
            return decode_plain(model.payload)
        return self.backend.decrypt(self.backend.deserialize(model.payload)) / model.total_weight

    def local_update(self, weights: Vector) -> Vector:
        """Train locally; with DP, the update (new - old) is clipped and noised before leaving."""
        new = self.train(weights)
        if self.dp is not None:
            new = weights + privatise(new - weights, self.dp, self.rng)
        return new

    def upload(self, weights: Vector) -> bytes:
        return self.backend.serialize(self.backend.encrypt(weights * float(self.n_examples)))

    def partial_decrypt(self, summed: bytes) -> bytes:
        fn = getattr(self.backend, "partial_decrypt")  # noqa: B009 - ThresholdBackend only
        return bytes(fn(self.backend.deserialize(summed)))


@dataclass
class RoundStats:
    round: int
    participants: list[str]
    bytes_up: dict[str, int]
    bytes_down: dict[str, int]
    seconds: float
    share_bytes: dict[str, int] = field(default_factory=dict)
    site_seconds: dict[str, float] = field(default_factory=dict)  # both phases, per site
    aggregator_seconds: float = 0.0
    parallel_seconds: float = 0.0  # the round's critical path were every site on its own machine


def run_fedavg(
    aggregator: FedAvgAggregator,
    sites: Sequence[FedAvgSite],
    initial: Vector,
    rounds: int,
    on_round: Callable[[RoundStats, GlobalModel], None] | None = None,
) -> tuple[GlobalModel, list[RoundStats]]:
    """FedAvg in one process (tests and benches): same code path as the Flower apps."""
    model = GlobalModel(False, encode_plain(initial), 1.0, 0)
    history = []
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        uploads, up, down, shares_b, site_t = [], {}, {}, {}, {}
        for site in sites:
            t = time.perf_counter()
            down[site.name] = model.size
            blob = site.upload(site.local_update(site.open_global(model)))
            up[site.name] = len(blob)
            uploads.append(blob)
            site_t[site.name] = time.perf_counter() - t
        phase1 = max(site_t.values())
        t = time.perf_counter()
        summed = aggregator.aggregate(uploads)
        agg_t = time.perf_counter() - t
        total = float(sum(s.n_examples for s in sites))
        shares: list[bytes] = []
        phase2 = 0.0
        if aggregator.mode == "threshold":
            for site in sites:
                t = time.perf_counter()
                share = site.partial_decrypt(summed)
                dt = time.perf_counter() - t
                site_t[site.name] += dt
                phase2 = max(phase2, dt)
                down[site.name] += len(summed)
                shares_b[site.name] = len(share)
                shares.append(share)
        t = time.perf_counter()
        model = aggregator.finish(summed, total, r, shares)
        agg_t += time.perf_counter() - t
        stats = RoundStats(
            r, [s.name for s in sites], up, down, time.perf_counter() - t0, shares_b, site_t, agg_t,
            phase1 + phase2 + agg_t,
        )  # fmt: skip
        history.append(stats)
        if on_round:
            on_round(stats, model)
    return model, history


# --- DeepProtect ---------------------------------------------------------------------------------


class DeepProtectServer:
    """Holds E(w) and adds encrypted gradients as they arrive; never holds a decrypting key."""

    def __init__(self, backend: HEBackend, encrypted_model: bytes, max_staleness: int = 4) -> None:
        self.backend = backend
        self._model = backend.deserialize(encrypted_model)
        self.version = 0
        self.max_staleness = max_staleness
        self.applied: list[tuple[str, int, int]] = []  # (site, base version, new version)
        self._lock = threading.Lock()

    def download(self) -> tuple[int, bytes]:
        with self._lock:
            return self.version, self.backend.serialize(self._model)

    def upload(self, site: str, update: bytes, base_version: int) -> int:
        """Add E(-η·g) to E(w); refuse an update more than `max_staleness` versions old."""
        delta = self.backend.deserialize(update)
        with self._lock:
            if self.version - base_version > self.max_staleness:
                raise Conflict(
                    f"update from {site} is {self.version - base_version} versions old "
                    f"(max {self.max_staleness}); download the model again"
                )
            self._model = self.backend.add(self._model, delta)
            self.version += 1
            self.applied.append((site, base_version, self.version))
            return self.version


@dataclass
class DeepProtectSite:
    """Downloads and decrypts the model, uploads an encrypted scaled gradient."""

    name: str
    backend: HEBackend
    grad: GradFn
    learning_rate: float
    dp: DPConfig | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def step(self, encrypted_model: bytes) -> bytes:
        w = self.backend.decrypt(self.backend.deserialize(encrypted_model))
        g = self.grad(w)
        step = -self.learning_rate * g
        if self.dp is not None:
            step = privatise(step, self.dp, self.rng)
        return self.backend.serialize(self.backend.encrypt(step))
