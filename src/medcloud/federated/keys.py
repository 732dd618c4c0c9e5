"""Key ceremony: what each site generates, what it publishes, and what never leaves it.

Two folders per party: `site_dir` (secret, never copied off the site, files mode 0600) and
`public_dir` (public material the hub relays between sites and hands to the aggregator).

- ckks (DeepProtect, one shared key): every site publishes an X25519 identity key; the lead
  site generates the CKKS key, publishes the public context (no secret key, for the aggregator)
  and, for each other site, the secret context sealed to that site's identity key
  (X25519 + HKDF-SHA256 + ChaCha20-Poly1305). The hub relays sealed blobs it cannot open.
- threshold (one share per site): the first party publishes the OpenFHE crypto context; the
  parties, in the agreed order, each read the previous public key, keep their secret share and
  publish their public key; the last one is the joint key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medcloud.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from medcloud.federated.he.base import HEBackend

MODES = ("plain", "ckks", "threshold")


@dataclass(frozen=True)
class KeyPaths:
    site: str
    site_dir: Path
    public_dir: Path

    @property
    def identity_key(self) -> Path:
        return self.site_dir / "identity.x25519"

    def identity_pub(self, site: str | None = None) -> Path:
        return self.public_dir / f"identity-{site or self.site}.x25519.pub"

    @property
    def ckks_secret(self) -> Path:
        return self.site_dir / "ckks.secret"

    @property
    def ckks_public(self) -> Path:
        return self.public_dir / "ckks.public"

    def ckks_sealed(self, site: str) -> Path:
        return self.public_dir / f"ckks.sealed-{site}"

    @property
    def threshold_context(self) -> Path:
        return self.public_dir / "threshold.context"

    @property
    def threshold_parties(self) -> Path:
        return self.public_dir / "threshold.parties.json"

    def threshold_pk(self, index: int) -> Path:
        return self.public_dir / f"threshold.pk-{index}"

    @property
    def threshold_joint(self) -> Path:
        return self.public_dir / "threshold.joint.pk"

    @property
    def threshold_share(self) -> Path:
        return self.site_dir / "threshold.share"


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise NotFound(f"{what} not found at {path}")
    return path.read_bytes()


# --- sealing secret material to one site -------------------------------------------------------


def _aead_key(shared: bytes, aad: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"medcloud-fl-seal|" + aad).derive(shared)


def seal(recipient_public: bytes, data: bytes, aad: bytes) -> bytes:
    """Encrypt `data` so that only the holder of the recipient's X25519 private key can read it."""
    eph = X25519PrivateKey.generate()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    nonce = os.urandom(12)
    return eph_pub + nonce + ChaCha20Poly1305(_aead_key(shared, aad)).encrypt(nonce, data, aad)


def unseal(private: X25519PrivateKey, blob: bytes, aad: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag

    eph_pub, nonce, body = blob[:32], blob[32:44], blob[44:]
    shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    try:
        return ChaCha20Poly1305(_aead_key(shared, aad)).decrypt(nonce, body, aad)
    except InvalidTag as exc:
        raise InvalidInput("sealed key material is not for this site or was altered") from exc


def ensure_identity(paths: KeyPaths) -> X25519PrivateKey:
    """This site's X25519 identity: created once, public half published."""
    if paths.identity_key.is_file():
        key = X25519PrivateKey.from_private_bytes(paths.identity_key.read_bytes())
    else:
        key = X25519PrivateKey.generate()
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        _write(paths.identity_key, raw, secret=True)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    _write(paths.identity_pub(), pub)
    return key


def published_sites(public_dir: Path) -> list[str]:
    suffix = ".x25519.pub"
    return sorted(p.name[len("identity-") : -len(suffix)] for p in public_dir.glob(f"identity-*{suffix}"))


# --- ckks: one shared key, sealed site to site -------------------------------------------------


def ckks_keygen(paths: KeyPaths, lead: bool) -> list[str]:
    """One step of the CKKS ceremony for this site; returns what it did, one line per action.

    Run it on every site; run it on the lead after the others have published their identity;
    run it again on the others to unseal the key. Each run is idempotent.
    """
    from medcloud.federated.he import ckks

    done: list[str] = []
    key = ensure_identity(paths)
    done.append(f"identity published for {paths.site}")
    if lead:
        if not paths.ckks_secret.is_file():
            secret, public = ckks.generate_context()
            _write(paths.ckks_secret, secret, secret=True)
            _write(paths.ckks_public, public)
            done.append("CKKS key generated; public context published")
        secret = paths.ckks_secret.read_bytes()
        for other in published_sites(paths.public_dir):
            if other != paths.site and not paths.ckks_sealed(other).is_file():
                sealed = seal(paths.identity_pub(other).read_bytes(), secret, other.encode())
                _write(paths.ckks_sealed(other), sealed)
                done.append(f"secret key sealed for {other}")
    elif not paths.ckks_secret.is_file() and paths.ckks_sealed(paths.site).is_file():
        secret = unseal(key, paths.ckks_sealed(paths.site).read_bytes(), paths.site.encode())
        _write(paths.ckks_secret, secret, secret=True)
        done.append("secret key unsealed")
    return done


# --- threshold: one share per site, chained public keys ----------------------------------------


def threshold_keygen(paths: KeyPaths, parties: list[str]) -> list[str]:
    """This site's link in the threshold key chain (run in the order of `parties`)."""
    from medcloud.federated.he import threshold

    if paths.site not in parties:
        raise InvalidInput(f"site {paths.site!r} is not one of the parties {parties}")
    index = parties.index(paths.site)
    done: list[str] = []
    if index == 0:
        if not paths.threshold_context.is_file():
            _write(paths.threshold_context, threshold.generate_context())
            _write(paths.threshold_parties, json.dumps(parties).encode())
            done.append("threshold crypto context published")
    elif json.loads(_read(paths.threshold_parties, "party list")) != parties:
        raise InvalidInput("party list differs from the one the first party published")
    if paths.threshold_share.is_file():
        return [*done, "share already generated"]
    context = _read(paths.threshold_context, "threshold context")
    previous = None if index == 0 else _read(paths.threshold_pk(index - 1), f"public key of {parties[index - 1]}")
    pk, share = threshold.keygen_share(context, previous)
    _write(paths.threshold_share, share, secret=True)
    _write(paths.threshold_pk(index), pk)
    done.append(f"key share kept; public key {index + 1}/{len(parties)} published")
    if index == len(parties) - 1:
        _write(paths.threshold_joint, pk)
        done.append("joint public key published")
    return done


# --- loading backends --------------------------------------------------------------------------


def site_backend(mode: str, paths: KeyPaths) -> HEBackend:
    """The backend a site trains with: it can decrypt (ckks) or make partial decryptions."""
    if mode == "plain":
        from medcloud.federated.he.plain import PlaintextBackend

        return PlaintextBackend()
    if mode == "ckks":
        from medcloud.federated.he.ckks import CkksBackend

        return CkksBackend(_read(paths.ckks_secret, "CKKS secret key (run `medcloud fl keygen`)"))
    if mode == "threshold":
        from medcloud.federated.he.threshold import ThresholdBackend

        parties = json.loads(_read(paths.threshold_parties, "party list"))
        return ThresholdBackend(
            _read(paths.threshold_context, "threshold context"),
            _read(paths.threshold_joint, "joint public key"),
            _read(paths.threshold_share, "key share"),
            lead=parties[0] == paths.site,
        )
    raise InvalidInput(f"unknown mode {mode!r}; choose one of {MODES}")


def aggregator_backend(mode: str, public_dir: Path) -> HEBackend:
    """The backend the aggregator runs: public material only, so it cannot decrypt."""
    if mode == "plain":
        from medcloud.federated.he.plain import PlaintextBackend

        return PlaintextBackend()
    if mode == "ckks":
        from medcloud.federated.he.ckks import CkksBackend

        return CkksBackend(_read(public_dir / "ckks.public", "CKKS public context"))
    if mode == "threshold":
        from medcloud.federated.he.threshold import ThresholdBackend

        return ThresholdBackend(
            _read(public_dir / "threshold.context", "threshold context"),
            _read(public_dir / "threshold.joint.pk", "joint public key"),
        )
    raise InvalidInput(f"unknown mode {mode!r}; choose one of {MODES}")
