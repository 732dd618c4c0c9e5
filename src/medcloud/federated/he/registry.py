"""Which HE schemes exist, what each can do and how each is built: the one place the FL code asks.

Every scheme registers a `BackendSpec` from its own module (`register(...)` at its bottom), as a
Flower strategy is one file implementing one small class: `plain.py`, `aes.py`, `ckks.py`, and
`bridge.py` for threshold (the module that runs OpenFHE in process or in a CPython 3.10 sidecar,
importable from any interpreter, unlike `threshold.py`). The protocol, the key ceremony, the
Flower apps, the simulation and the CLI read the spec's capabilities (`encrypted`, `shared_key`,
`threshold`, `supports_deepprotect`, `needs_sidecar`) and call its builders; none of them
compares scheme names.

Built-in schemes are found by module name (`BUILTIN`) and imported on first use, so that listing
the modes loads no HE library (TenSEAL, OpenFHE) and a scheme whose library is missing here is
refused with a `ConfigError` that says so. Anything else (a plugin, a test) calls `register`.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medcloud.errors import ConfigError
from medcloud.federated.he.base import HEBackend
from medcloud.federated.keyfiles import KeyPaths

__all__ = [
    "BUILTIN",
    "BackendSpec",
    "Decryption",
    "KeygenStep",
    "SharedKey",
    "backend_names",
    "backend_spec",
    "modes_where",
    "register",
    "unregister",
]

# Who turns the aggregator's sum of encrypted updates into the next model:
# - "aggregator": nobody needs to, it is not encrypted (the plaintext baseline);
# - "sites": every site holds the whole key and decrypts it; the aggregator sends it back encrypted;
# - "joint": every key share makes a partial decryption, which the aggregator fuses (threshold).
Decryption = Literal["aggregator", "sites", "joint"]
DECRYPTIONS: tuple[Decryption, ...] = ("aggregator", "sites", "joint")

# Where the built-in schemes register themselves, in the order modes are listed (the baseline first).
BUILTIN: dict[str, str] = {
    "plain": "medcloud.federated.he.plain",
    "ckks": "medcloud.federated.he.ckks",
    "aes": "medcloud.federated.he.aes",
    "threshold": "medcloud.federated.he.bridge",
}


@dataclass(frozen=True)
class KeygenStep:
    """What one `medcloud fl keygen` run asks of its site; each ceremony reads the fields it uses."""

    lead: bool = False  # shared key: this site generates the key and seals it to the others
    parties: tuple[str, ...] = ()  # threshold: every site, in key-chain order; shared key (lead): every party
    ceremony: str = ""  # shared key: the ceremony id the lead announced out of band (refuse any other)
    threshold: int | None = None  # threshold: t of a t-of-N key (None: N-of-N or what was published)
    dropped: str = ""  # threshold t-of-N: a site that dropped out after keygen
    recoverer: str = ""  # with `dropped`: the surviving site that rebuilds its key share


@dataclass(frozen=True)
class SharedKey:
    """How a scheme whose sites share one key makes and opens it; the ceremony that seals the
    secret half site to site is `keys.shared_keygen`, the same for every such scheme."""

    generate: Callable[[], tuple[bytes, bytes]]  # fresh (secret, public) key material
    load: Callable[[bytes], HEBackend]  # secret half -> a site's backend, public half -> the aggregator's
    public_name: str = "parameters"  # what the public half is called in the ceremony's messages
    # What a sealed key binds besides the site (AEAD associated data, `<domain>|<site>`); None: the
    # scheme's name. "" binds the site alone (ckks: its sealed keys predate the other schemes).
    seal_domain: str | None = None


def _never() -> bool:
    return False


def _runs_here() -> str:
    return ""


@dataclass(frozen=True)
class BackendSpec:
    """One HE scheme: what it can do and how its backends are built (see the module docstring)."""

    name: str
    summary: str  # one line: what the mode is for (`medcloud fl modes`)
    decryption: Decryption
    for_site: Callable[[KeyPaths], HEBackend]  # a site's backend, from its key folders
    for_aggregator: Callable[[Path], HEBackend]  # the aggregator's, from the public folder alone
    shared: SharedKey | None = None
    # One site's step of this scheme's key ceremony (None: the scheme has no keys).
    keygen: Callable[[KeyPaths, KeygenStep], list[str]] | None = None
    # Every site's steps in the right order, all folders on this machine (simulations, benches).
    ceremony: Callable[[Sequence[KeyPaths]], None] | None = None
    # (a site's backend, the aggregator's) from keys made in memory, one backend serving every site
    # (one-process runs: the image task, tests); None where each site needs its own key.
    in_memory: Callable[[], tuple[HEBackend, HEBackend]] | None = None
    # t-of-N: a backend making a dropped site's partial decryptions from its recovered key share.
    for_recovered: Callable[[KeyPaths, str], HEBackend] | None = None
    supports_deepprotect: bool = True  # DeepProtect needs sites that decrypt the model themselves
    needs_sidecar: Callable[[], bool] = _never  # True where its library runs in another interpreter
    unavailable: Callable[[], str] = _runs_here  # '' where it can run here, else why not
    # FedAvg: sites encrypt w * n/U. A fixed-point scheme with a hard range (aes) wants U > 1 so that large
    # sites are not range-limited; an approximate scheme (CKKS) keeps U = 1, since its absolute error would
    # be multiplied by U/n when the sum is divided by the weights.
    weight_unit: float = 1.0

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ConfigError(f"HE scheme name {self.name!r}: use a short identifier (it names key files)")
        if self.decryption not in DECRYPTIONS:
            raise ConfigError(f"HE scheme {self.name}: decryption {self.decryption!r} is not one of {DECRYPTIONS}")
        if self.supports_deepprotect and self.decryption == "joint":
            raise ConfigError(f"HE scheme {self.name}: DeepProtect needs sites that decrypt, not a joint decryption")

    @property
    def encrypted(self) -> bool:
        """False for the plaintext baseline: the aggregator reads the updates."""
        return self.decryption != "aggregator"

    @property
    def shared_key(self) -> bool:
        """Every site holds the whole key and opens the global model itself."""
        return self.decryption == "sites"

    @property
    def threshold(self) -> bool:
        """Each site holds one key share; the sum is opened by fusing every share's partial decryption."""
        return self.decryption == "joint"


_specs: dict[str, BackendSpec] = {}
_lock = threading.Lock()


def register(spec: BackendSpec, replace: bool = False) -> BackendSpec:
    """Make `spec` a mode; a second scheme under a taken name is refused unless `replace`."""
    with _lock:
        if spec.name in _specs and not replace and _specs[spec.name] is not spec:
            raise ConfigError(f"an HE scheme named {spec.name!r} is already registered")
        _specs[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget a registered scheme (tests; a built-in one registers again on its next lookup only
    if its module is imported afresh)."""
    with _lock:
        _specs.pop(name, None)


def backend_names() -> list[str]:
    """Every mode: the built-in ones (in `BUILTIN` order, without importing them), then the others."""
    with _lock:
        return list(BUILTIN) + [n for n in _specs if n not in BUILTIN]


def backend_spec(name: str) -> BackendSpec:
    """The spec of mode `name`; `ConfigError` for a name nobody registered or a library missing here."""
    spec = _specs.get(name)
    if spec is None and name in BUILTIN:
        # Outside the lock: the module registers itself while Python's import lock is held.
        try:
            importlib.import_module(BUILTIN[name])
        except ImportError as exc:
            raise ConfigError(f"mode {name!r} cannot run in this Python: {exc}") from exc
        spec = _specs.get(name)
    if spec is None:
        raise ConfigError(f"unknown mode {name!r}: the registered modes are {', '.join(backend_names())}")
    return spec


def modes_where(test: Callable[[BackendSpec], bool]) -> list[str]:
    """The modes whose spec passes `test`, in `backend_names` order (for messages that list the
    modes able to do something); a mode whose library is missing in this Python is left out."""
    found = []
    for name in backend_names():
        try:
            spec = backend_spec(name)
        except ConfigError:
            continue
        if test(spec):
            found.append(name)
    return found
