"""The protocols, independent of transport: Flower apps and in-process runs share this code.

FedAvg with encrypted weighted weights (weight transmission, Phong et al. TIFS 2019): each
site uploads E(n_k · w_k) once per round; the aggregator adds ciphertexts. What happens to
the sum depends on the scheme's `decryption` (`he.registry.BackendSpec`), never on its name:
- "aggregator" (plain): the aggregator divides by Σn_k itself (baseline).
- "sites" (ckks, aes: one shared key): the aggregator cannot decrypt; it sends the encrypted sum
  and Σn_k back and every site decrypts the new global model (the aggregator never sees a model).
- "joint" (threshold): every site returns a partial decryption of the sum; fusing all of them yields
  Σn_k·w_k, so the aggregator learns the average model but no single site's update, even
  together with all but one of the sites.
  With a t-of-N key a site may drop out of a round (before its upload, or after it without
  returning its partial decryption): one survivor rebuilds the dropped site's key share from the
  shares t - 1 other survivors release to it (sealed, through the public folder) and makes the
  missing partial decryption, so the round fuses the sum of the uploads that were made. With
  fewer than t survivors the round is refused (`HEError`). `run_fedavg(dropouts=...)` says who
  drops when.

DeepProtect (Phong et al. TIFS 2018): the aggregator holds the model encrypted, E(w). A site
downloads E(w), decrypts it, computes a gradient on local data and uploads E(-η·g); the
aggregator adds it to E(w). Sites may run asynchronously: an update computed on an older
version is applied as long as it is at most `max_staleness` versions behind.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from medcloud.errors import Conflict, InvalidInput
from medcloud.federated.dp import DPConfig, privatise
from medcloud.federated.he.base import HEBackend, HEError
from medcloud.federated.he.registry import BackendSpec, backend_spec
from medcloud.federated.keys import KeyPaths, recovered_backend, threshold_of, threshold_recover, threshold_release

Vector = NDArray[np.float64]
TrainFn = Callable[[Vector], Vector]
GradFn = Callable[[Vector], Vector]
# When a site drops out of a FedAvg round: before its upload (not in the sum), or after it (in the
# sum, but it never returns its partial decryption).
Dropout = Literal["before-upload", "after-upload"]
DROPOUTS: tuple[Dropout, ...] = ("before-upload", "after-upload")
DEFAULT_WEIGHT_UNIT = 1.0  # sites encrypt w * n/U (see FedAvgSite.weight_unit; each scheme's spec picks U)


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
        self.spec: BackendSpec = backend_spec(backend.name)

    @property
    def mode(self) -> str:
        return self.backend.name

    def aggregate(self, uploads: Sequence[bytes]) -> bytes:
        """Homomorphic sum of the uploads, serialized."""
        if not uploads:
            raise InvalidInput("no site uploads to aggregate")
        return self.backend.sum_serialized(uploads)

    def finish(self, summed: bytes, total_weight: float, version: int, shares: Sequence[bytes] = ()) -> GlobalModel:
        """Turn the sum into the next global model, as the scheme's `decryption` says (see the
        module docstring): the aggregator reads it, or fuses every key share's partial decryption
        of it, or hands it on encrypted for the sites to open."""
        be = self.backend
        if self.spec.decryption == "aggregator":
            avg = be.decrypt(be.deserialize(summed)) / total_weight
            return GlobalModel(False, encode_plain(avg), 1.0, version)
        if self.spec.decryption == "joint":
            avg = np.asarray(be.fuse(list(shares)), dtype=np.float64) / total_weight
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
    keys: KeyPaths | None = None  # threshold t-of-N: this site's key folders, to stand in for a dropped site
    # Sites upload E(w * n/U) rather than E(w * n): a fixed-point backend bounds |values|, and with U = 1
    # a site with 100,000 examples could send only |w| < 21 (aes: U = 1,024, `BackendSpec.weight_unit`).
    # U is shared by all sites of a run (the aggregator refuses mixed units) and is a site-side setting,
    # so an aggregator cannot pick it to probe the range check. A power of two keeps n/U exact in binary.
    weight_unit: float = DEFAULT_WEIGHT_UNIT

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight_unit) and self.weight_unit > 0):
            raise InvalidInput(f"weight unit must be a positive number, got {self.weight_unit!r}")

    @property
    def weight(self) -> float:
        """This site's public FedAvg weight, n/U: the aggregator divides the sum by the sum of these."""
        return float(self.n_examples) / self.weight_unit

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
        return self.backend.serialize(self.backend.encrypt(weights * self.weight))

    def partial_decrypt(self, summed: bytes) -> bytes:
        return _partial_decrypt(self.backend, summed)

    def _keys(self) -> KeyPaths:
        if self.keys is None:
            raise InvalidInput(f"site {self.name} has no key folders (FedAvgSite.keys): it cannot stand in for another")
        return self.keys

    def release_share(self, missing: str, to: str) -> int:
        """t-of-N: re-seal this site's share of `missing`'s key to the recovering site `to` (a sealed
        blob in the public folder); returns the blob's size."""
        paths = self._keys()
        threshold_release(paths, missing, to)
        return paths.threshold_release(missing, paths.site, to).stat().st_size

    def recover_partial(self, missing: str, summed: bytes) -> bytes:
        """t-of-N: rebuild `missing`'s key share from the shares released to this site (plus its own)
        and make `missing`'s partial decryption of the sum."""
        paths = self._keys()
        threshold_recover(paths, missing)
        return _partial_decrypt(recovered_backend(paths, missing, self.backend.name), summed)


def _partial_decrypt(backend: HEBackend, summed: bytes) -> bytes:
    """A threshold key share's partial decryption of a serialized sum."""
    return bytes(backend.partial_decrypt(backend.deserialize(summed)))


@dataclass
class RoundStats:
    round: int
    participants: list[str]
    bytes_up: dict[str, int]
    bytes_down: dict[str, int]
    seconds: float
    share_bytes: dict[str, int] = field(default_factory=dict)  # partial decryptions, by whose key share
    site_seconds: dict[str, float] = field(default_factory=dict)  # both phases, per site
    aggregator_seconds: float = 0.0
    parallel_seconds: float = 0.0  # the round's critical path were every site on its own machine
    dropped: dict[str, str] = field(default_factory=dict)  # site -> "before-upload" or "after-upload"
    recovered: dict[str, str] = field(default_factory=dict)  # dropped site -> survivor that made its partial
    release_bytes: dict[str, int] = field(default_factory=dict)  # sealed key-share bytes each survivor released


def run_fedavg(
    aggregator: FedAvgAggregator,
    sites: Sequence[FedAvgSite],
    initial: Vector,
    rounds: int,
    on_round: Callable[[RoundStats, GlobalModel], None] | None = None,
    dropouts: Mapping[int, Mapping[str, Dropout]] | None = None,
) -> tuple[GlobalModel, list[RoundStats]]:
    """FedAvg in one process (tests and benches): same code path as the Flower apps.

    `dropouts[r]` maps the sites that drop out of round r (1-based) to when: "before-upload" or
    "after-upload" (see `Dropout`); they are back the next round unless listed again. The average
    is over the uploads that were made. In threshold mode a dropped site's partial decryption is
    made by a survivor from its recovered key share (t-of-N keys, `FedAvgSite.keys`); with fewer
    than t survivors the round raises `HEError`.
    """
    dropouts = dropouts or {}
    names = [s.name for s in sites]
    units = {s.weight_unit for s in sites}
    if len(units) > 1:
        raise InvalidInput(f"sites must share one weight unit, got {sorted(units)}")
    for r, drops in dropouts.items():
        for name, when in drops.items():
            if name not in names or when not in DROPOUTS:
                raise InvalidInput(f"round {r}: cannot drop {name!r} {when!r} (sites {names}, when one of {DROPOUTS})")
    model = GlobalModel(False, encode_plain(initial), 1.0, 0)
    history = []
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        drops = dict(dropouts.get(r, {}))
        uploaders = [s for s in sites if drops.get(s.name) != "before-upload"]
        survivors = [s for s in sites if s.name not in drops]
        uploads, up, down, shares_b, site_t = [], {}, {}, {}, {}
        for site in uploaders:
            t = time.perf_counter()
            down[site.name] = model.size
            blob = site.upload(site.local_update(site.open_global(model)))
            up[site.name] = len(blob)
            uploads.append(blob)
            site_t[site.name] = time.perf_counter() - t
        phase1 = max(site_t.values(), default=0.0)
        t = time.perf_counter()
        summed = aggregator.aggregate(uploads)
        agg_t = time.perf_counter() - t
        total = float(sum(s.weight for s in uploaders))
        shares: list[bytes] = []
        phase2 = 0.0
        recovered: dict[str, str] = {}
        released: dict[str, int] = {}
        if aggregator.spec.threshold:
            missing = [s for s in sites if s.name in drops]
            helpers = _check_survivors(r, sites, survivors, missing)
            for site in survivors:
                t = time.perf_counter()
                share = site.partial_decrypt(summed)
                dt = time.perf_counter() - t
                site_t[site.name] = site_t.get(site.name, 0.0) + dt
                phase2 = max(phase2, dt)
                down[site.name] = down.get(site.name, 0) + len(summed)
                shares_b[site.name] = len(share)
                shares.append(share)
            recoverer = survivors[0]
            for gone in missing:  # the helpers release in parallel, then the recoverer rebuilds and decrypts
                slowest = 0.0
                for helper in helpers:
                    t = time.perf_counter()
                    size = helper.release_share(gone.name, recoverer.name)
                    released[helper.name] = released.get(helper.name, 0) + size
                    dt = time.perf_counter() - t
                    site_t[helper.name] += dt
                    slowest = max(slowest, dt)
                t = time.perf_counter()
                share = recoverer.recover_partial(gone.name, summed)
                dt = time.perf_counter() - t
                site_t[recoverer.name] += dt
                phase2 += slowest + dt
                shares_b[gone.name] = len(share)
                recovered[gone.name] = recoverer.name
                shares.append(share)
        t = time.perf_counter()
        model = aggregator.finish(summed, total, r, shares)
        agg_t += time.perf_counter() - t
        stats = RoundStats(
            r, [s.name for s in uploaders], up, down, time.perf_counter() - t0, shares_b, site_t, agg_t,
            phase1 + phase2 + agg_t, dict(drops), recovered, released,
        )  # fmt: skip
        history.append(stats)
        if on_round:
            on_round(stats, model)
    return model, history


def _check_survivors(
    r: int, sites: Sequence[FedAvgSite], survivors: Sequence[FedAvgSite], missing: Sequence[FedAvgSite]
) -> list[FedAvgSite]:
    """Refuse a threshold round that cannot be decrypted; else the t - 1 survivors (after the first,
    which recovers) that release their shares of each dropped site's key."""
    if not missing:
        return []
    gone = ", ".join(s.name for s in missing)
    if not survivors:
        raise HEError(f"round {r}: every site dropped out ({gone}); nobody can decrypt")
    paths = survivors[0]._keys()
    parties = json.loads(paths.threshold_parties.read_bytes())
    t = threshold_of(paths.public_dir, parties)
    if t >= len(parties):
        raise HEError(
            f"round {r}: {gone} dropped out and the key is {len(parties)}-of-{len(parties)}: "
            "decryption needs every site (make a t-of-N key, `--threshold`)"
        )
    if len(survivors) < t:
        raise HEError(
            f"round {r}: only {len(survivors)} of {len(sites)} sites survive ({gone} dropped out); "
            f"the {t}-of-{len(parties)} key needs {t} to recover a dropped site's partial decryption"
        )
    for s in survivors[:t]:  # the recoverer and its helpers need their key folders: fail before anyone releases
        if s._keys().site != s.name:
            raise InvalidInput(f"site {s.name}'s key folders are {s._keys().site}'s: site names are the party names")
    return list(survivors[1:t])


# --- DeepProtect ---------------------------------------------------------------------------------


class DeepProtectServer:
    """Holds E(w) and adds encrypted gradients as they arrive; never holds a decrypting key."""

    def __init__(self, backend: HEBackend, encrypted_model: bytes, max_staleness: int = 4) -> None:
        self.backend = backend
        self._model = backend.deserialize(encrypted_model)
        self.version = 0
        self.max_staleness = max_staleness
        self.applied: list[tuple[str, int, int]] = []  # (site, base version, new version)
        self.refreshes = 0
        self._lock = threading.Lock()

    def download(self) -> tuple[int, bytes]:
        with self._lock:
            return self.version, self.backend.serialize(self._model)

    def refresh_due(self) -> bool:
        """Whether to ask the next site for a fresh encryption of the model (`HEBackend.refresh_due`)."""
        with self._lock:
            return self.backend.refresh_due(self._model)

    def upload(self, site: str, update: bytes, base_version: int, refresh: bytes | None = None) -> int:
        """Add E(-η·g) to E(w); refuse an update more than `max_staleness` versions old.

        `refresh`, a site's fresh encryption of w + (-η·g) for the version it downloaded, replaces
        E(w) instead when no other update came in since; otherwise it is dropped and the update
        added as usual."""
        delta = self.backend.deserialize(update)
        fresh = self.backend.deserialize(refresh) if refresh is not None else None
        if fresh is not None and fresh.length != delta.length:
            raise InvalidInput(f"refresh from {site} has {fresh.length} values, the update {delta.length}")
        with self._lock:
            if self.version - base_version > self.max_staleness:
                raise Conflict(
                    f"update from {site} is {self.version - base_version} versions old "
                    f"(max {self.max_staleness}); download the model again"
                )
            if fresh is not None and base_version == self.version:
                self._model = fresh
                self.refreshes += 1
            else:
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
        return self.update(encrypted_model).update

    def update(self, encrypted_model: bytes, refresh: bool = False) -> DeepProtectUpload:
        """E(-η·g) and, when asked (`refresh`), a fresh encryption of the stepped model w - η·g."""
        w = self.backend.decrypt(self.backend.deserialize(encrypted_model))
        g = self.grad(w)
        step = -self.learning_rate * g
        if self.dp is not None:
            step = privatise(step, self.dp, self.rng)
        fresh = self.backend.serialize(self.backend.encrypt(w + step)) if refresh else None
        return DeepProtectUpload(self.backend.serialize(self.backend.encrypt(step)), fresh)


@dataclass
class DeepProtectUpload:
    update: bytes
    refresh: bytes | None = None
