"""Key ceremony: what each site generates, what it publishes, and what never leaves it.

Two folders per party: `site_dir` (secret, never copied off the site, files mode 0600) and
`public_dir` (public material the hub relays between sites and hands to the aggregator).

- ckks (DeepProtect, one shared key): every site publishes an X25519 identity key; the lead
  site generates the CKKS key, publishes the public context (no secret key, for the aggregator)
  and, for each other site, the secret context sealed to that site's identity key
  (X25519 + HKDF-SHA256 + ChaCha20-Poly1305). The hub relays sealed blobs it cannot open.
- aes (the same trust model, additive AES-256-CTR encryption): the same steps, with a 256-bit key
  instead of a CKKS context; the public file holds the parameters and the key's fingerprint.
- threshold (one share per site): the first party publishes the OpenFHE crypto context; the
  parties, in the agreed order, each read the previous public key, keep their secret share and
  publish their public key; the last one is the joint key.
- threshold t-of-N (`threshold < len(parties)`): every site also publishes an X25519 identity;
  once all are published, each site Shamir-shares its key share and publishes the share for
  each other site sealed to that site (the hub relays N(N-1) sealed blobs it cannot open). If a
  site drops out, the survivors re-seal their shares of its key to one recovering site
  (`threshold_release`), which rebuilds the missing key share (`threshold_recover`).
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

MODES = ("plain", "ckks", "aes", "threshold")
SHARED_KEY_MODES = ("ckks", "aes")


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

    def shared_secret(self, mode: str = "ckks") -> Path:
        """The key the sites share in a shared-key mode (ckks, aes)."""
        return self.site_dir / f"{mode}.secret"

    def shared_public(self, mode: str = "ckks") -> Path:
        return self.public_dir / f"{mode}.public"

    def shared_sealed(self, site: str, mode: str = "ckks") -> Path:
        return self.public_dir / f"{mode}.sealed-{site}"

    @property
    def ckks_secret(self) -> Path:
        return self.shared_secret("ckks")

    @property
    def ckks_public(self) -> Path:
        return self.shared_public("ckks")

    def ckks_sealed(self, site: str) -> Path:
        return self.shared_sealed(site, "ckks")

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

    @property
    def threshold_t(self) -> Path:
        return self.public_dir / "threshold.t.json"

    def threshold_sealed_share(self, of: str, holder: str) -> Path:
        """`of`'s key, Shamir share for `holder`, sealed to `holder`."""
        return self.public_dir / f"threshold.keyshare-{of}-for-{holder}.sealed"

    def threshold_release(self, of: str, holder: str, to: str) -> Path:
        """`holder`'s share of `of`'s key, re-sealed to the recovering site `to`."""
        return self.public_dir / f"threshold.release-{of}-from-{holder}-to-{to}.sealed"

    def threshold_recovered(self, of: str) -> Path:
        return self.site_dir / f"threshold.recovered-{of}.share"


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


# --- ckks / aes: one shared key, sealed site to site ---------------------------------------------


def _shared_aad(mode: str, site: str) -> bytes:
    return site.encode() if mode == "ckks" else f"{mode}|{site}".encode()


def _generate_shared(mode: str) -> tuple[bytes, bytes]:
    if mode == "ckks":
        from medcloud.federated.he import ckks

        return ckks.generate_context()
    if mode == "aes":
        from medcloud.federated.he import aes

        return aes.generate_key()
    raise InvalidInput(f"{mode!r} is not a shared-key mode; choose one of {SHARED_KEY_MODES}")


def shared_keygen(paths: KeyPaths, lead: bool, mode: str = "ckks") -> list[str]:
    """One step of a shared-key ceremony (ckks or aes) for this site; returns what it did.

    Run it on every site; run it on the lead after the others have published their identity;
    run it again on the others to unseal the key. Each run is idempotent.
    """
    if mode not in SHARED_KEY_MODES:
        raise InvalidInput(f"{mode!r} is not a shared-key mode; choose one of {SHARED_KEY_MODES}")
    label = mode.upper()
    done: list[str] = []
    key = ensure_identity(paths)
    done.append(f"identity published for {paths.site}")
    secret_path = paths.shared_secret(mode)
    if lead:
        if not secret_path.is_file():
            secret, public = _generate_shared(mode)
            _write(secret_path, secret, secret=True)
            _write(paths.shared_public(mode), public)
            done.append(f"{label} key generated; public {'context' if mode == 'ckks' else 'parameters'} published")
        secret = secret_path.read_bytes()
        for other in published_sites(paths.public_dir):
            if other != paths.site and not paths.shared_sealed(other, mode).is_file():
                sealed = seal(paths.identity_pub(other).read_bytes(), secret, _shared_aad(mode, other))
                _write(paths.shared_sealed(other, mode), sealed)
                done.append(f"secret key sealed for {other}")
    elif not secret_path.is_file() and paths.shared_sealed(paths.site, mode).is_file():
        secret = unseal(key, paths.shared_sealed(paths.site, mode).read_bytes(), _shared_aad(mode, paths.site))
        _write(secret_path, secret, secret=True)
        done.append("secret key unsealed")
    return done


def ckks_keygen(paths: KeyPaths, lead: bool) -> list[str]:
    """The CKKS ceremony step (see `shared_keygen`)."""
    return shared_keygen(paths, lead, "ckks")


# --- threshold: one share per site, chained public keys ----------------------------------------


def _keyshare_aad(of: str, holder: str, threshold: int, parties: list[str]) -> bytes:
    return f"threshold-keyshare|{of}|{holder}|{threshold}/{','.join(parties)}".encode()


def _release_aad(of: str, holder: str, to: str, threshold: int, parties: list[str]) -> bytes:
    return f"threshold-release|{of}|{holder}|{to}|{threshold}/{','.join(parties)}".encode()


def threshold_of(public_dir: Path, parties: list[str]) -> int:
    """The published t (N where none was published: N-of-N)."""
    path = public_dir / "threshold.t.json"
    if not path.is_file():
        return len(parties)
    published = json.loads(path.read_bytes())
    if published.get("parties") != parties:
        raise InvalidInput("party list differs from the one the t-of-N was published for")
    return int(published["threshold"])


def threshold_keygen(paths: KeyPaths, parties: list[str], threshold: int | None = None) -> list[str]:
    """This site's link in the threshold key chain (run in the order of `parties`).

    `threshold` t < N makes the key t-of-N: run it once on every site first (identity keys), then
    in chain order; a site seals its Shamir shares once every identity is published (rerun it
    if it says it is waiting). Without `threshold`: N-of-N, or the t the first party published.
    """
    from medcloud.federated.he import threshold as thr

    if paths.site not in parties:
        raise InvalidInput(f"site {paths.site!r} is not one of the parties {parties}")
    if len(set(parties)) != len(parties):
        raise InvalidInput(f"duplicate site in the parties {parties}")
    t = threshold if threshold is not None else threshold_of(paths.public_dir, parties)
    try:
        thr.check_threshold(len(parties), t)
    except Exception as exc:
        raise InvalidInput(str(exc)) from exc
    shared = t < len(parties)
    index = parties.index(paths.site)
    done: list[str] = []
    if shared:
        ensure_identity(paths)
        done.append(f"identity published for {paths.site}")
    if index == 0:
        if not paths.threshold_context.is_file():
            _write(paths.threshold_context, thr.generate_context())
            _write(paths.threshold_parties, json.dumps(parties).encode())
            if shared:
                _write(paths.threshold_t, json.dumps({"parties": parties, "threshold": t}).encode())
            done.append("threshold crypto context published")
    elif shared and not paths.threshold_parties.is_file():
        return [*done, f"waiting for {parties[0]} to publish the crypto context"]
    elif json.loads(_read(paths.threshold_parties, "party list")) != parties:
        raise InvalidInput("party list differs from the one the first party published")
    if threshold_of(paths.public_dir, parties) != t:
        raise InvalidInput(f"threshold {t} differs from the one the first party published")
    if paths.threshold_share.is_file():
        done.append("share already generated")
    else:
        context = _read(paths.threshold_context, "threshold context")
        if index > 0 and shared and not paths.threshold_pk(index - 1).is_file():
            return [*done, f"waiting for the public key of {parties[index - 1]}"]
        previous = None if index == 0 else _read(paths.threshold_pk(index - 1), f"public key of {parties[index - 1]}")
        pk, share = thr.keygen_share(context, previous)
        _write(paths.threshold_share, share, secret=True)
        _write(paths.threshold_pk(index), pk)
        done.append(f"key share kept; public key {index + 1}/{len(parties)} published")
        if index == len(parties) - 1:
            _write(paths.threshold_joint, pk)
            done.append("joint public key published")
    if shared:
        done.extend(_seal_key_shares(paths, parties, t))
    return done


def _seal_key_shares(paths: KeyPaths, parties: list[str], t: int) -> list[str]:
    """Shamir-share this site's key share and seal each share to its holder (once, all at once)."""
    from medcloud.federated.he import threshold as thr

    others = [p for p in parties if p != paths.site]
    if all(paths.threshold_sealed_share(paths.site, o).is_file() for o in others):
        return ["key shares already sealed"]
    missing = [o for o in others if not paths.identity_pub(o).is_file()]
    if missing:
        return [f"waiting for the identity keys of {', '.join(missing)} to seal the key shares"]
    shares = thr.share_key(
        _read(paths.threshold_context, "threshold context"),
        paths.threshold_share.read_bytes(),
        len(parties),
        t,
        parties.index(paths.site) + 1,
    )
    for o in others:  # every share of one polynomial, written together
        blob = seal(
            paths.identity_pub(o).read_bytes(), shares[parties.index(o) + 1], _keyshare_aad(paths.site, o, t, parties)
        )
        _write(paths.threshold_sealed_share(paths.site, o), blob)
    return [f"key share split {t}-of-{len(parties)}; shares sealed for {', '.join(others)}"]


def _own_share_of(paths: KeyPaths, parties: list[str], missing: str) -> bytes:
    """This site's (unsealed) Shamir share of `missing`'s key; checked against its header."""
    from medcloud.federated.he import threshold as thr

    t = threshold_of(paths.public_dir, parties)
    key = ensure_identity(paths)
    sealed = _read(paths.threshold_sealed_share(missing, paths.site), f"{missing}'s key share for {paths.site}")
    share = unseal(key, sealed, _keyshare_aad(missing, paths.site, t, parties))
    meta = thr.key_share_meta(share)
    if (meta["of"], meta["holder"]) != (parties.index(missing) + 1, parties.index(paths.site) + 1):
        raise InvalidInput("sealed key share is not the one its name says")
    return share


def _check_dropout(paths: KeyPaths, parties: list[str], missing: str, to: str) -> int:
    if missing not in parties or to not in parties or missing in (to, paths.site):
        raise InvalidInput(f"cannot recover {missing!r} at {to!r} from {paths.site!r} among {parties}")
    t = threshold_of(paths.public_dir, parties)
    if t >= len(parties):
        raise InvalidInput("this key is N-of-N: a missing site cannot be recovered")
    return t


def threshold_release(paths: KeyPaths, missing: str, to: str) -> list[str]:
    """On a surviving site: re-seal its share of `missing`'s key to the recovering site `to`."""
    parties = json.loads(_read(paths.threshold_parties, "party list"))
    t = _check_dropout(paths, parties, missing, to)
    if to == paths.site:
        return ["this site recovers: its own share is used directly"]
    share = _own_share_of(paths, parties, missing)
    blob = seal(paths.identity_pub(to).read_bytes(), share, _release_aad(missing, paths.site, to, t, parties))
    _write(paths.threshold_release(missing, paths.site, to), blob)
    return [f"share of {missing}'s key sealed for {to}"]


def threshold_recover(paths: KeyPaths, missing: str) -> list[str]:
    """On the recovering site: rebuild `missing`'s key share from its own share and the released ones.

    Needs t shares in all (its own counts); fewer raise `HEError`. The rebuilt share stays in
    this site's secret folder (0600) and makes `missing`'s partial decryptions
    (`recovered_backend`).
    """
    from medcloud.federated.he import threshold as thr

    parties = json.loads(_read(paths.threshold_parties, "party list"))
    t = _check_dropout(paths, parties, missing, paths.site)
    key = ensure_identity(paths)
    shares = [_own_share_of(paths, parties, missing)]
    for holder in parties:
        release = paths.threshold_release(missing, holder, paths.site)
        if holder not in (missing, paths.site) and release.is_file():
            share = unseal(key, release.read_bytes(), _release_aad(missing, holder, paths.site, t, parties))
            meta = thr.key_share_meta(share)
            if (meta["of"], meta["holder"]) != (parties.index(missing) + 1, parties.index(holder) + 1):
                raise InvalidInput(f"released key share from {holder} is not the one its name says")
            shares.append(share)
    recovered = thr.recover_key(_read(paths.threshold_context, "threshold context"), shares)
    _write(paths.threshold_recovered(missing), recovered, secret=True)
    return [f"{missing}'s key share recovered from {len(shares)} shares ({t}-of-{len(parties)})"]


def recovered_backend(paths: KeyPaths, missing: str) -> HEBackend:
    """On the recovering site: a backend that makes `missing`'s partial decryptions (in a CPython
    3.10 sidecar where OpenFHE does not import here: `he.bridge`)."""
    from medcloud.federated.he.bridge import threshold_backend

    parties = json.loads(_read(paths.threshold_parties, "party list"))
    return threshold_backend(
        _read(paths.threshold_context, "threshold context"),
        _read(paths.threshold_joint, "joint public key"),
        _read(paths.threshold_recovered(missing), f"recovered key share of {missing} (run threshold_recover)"),
        lead=parties[0] == missing,
    )


# --- loading backends --------------------------------------------------------------------------


def site_backend(mode: str, paths: KeyPaths) -> HEBackend:
    """The backend a site trains with: it can decrypt (ckks, aes) or make partial decryptions."""
    if mode == "plain":
        from medcloud.federated.he.plain import PlaintextBackend

        return PlaintextBackend()
    if mode == "ckks":
        from medcloud.federated.he.ckks import CkksBackend

        return CkksBackend(_read(paths.ckks_secret, "CKKS secret key (run `medcloud fl keygen`)"))
    if mode == "aes":
        from medcloud.federated.he.aes import AesCtrBackend

        return AesCtrBackend(_read(paths.shared_secret("aes"), "AES shared key (run `medcloud fl keygen --mode aes`)"))
    if mode == "threshold":
        # In-process where OpenFHE imports (CPython 3.10), else in a 3.10 sidecar (`he.bridge`).
        from medcloud.federated.he.bridge import threshold_backend

        parties = json.loads(_read(paths.threshold_parties, "party list"))
        return threshold_backend(
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
    if mode == "aes":
        from medcloud.federated.he.aes import AesCtrBackend

        return AesCtrBackend(_read(public_dir / "aes.public", "AES public parameters"))
    if mode == "threshold":
        # Public material only, in-process or in the sidecar: neither can decrypt (NoSecretKey).
        from medcloud.federated.he.bridge import threshold_backend

        return threshold_backend(
            _read(public_dir / "threshold.context", "threshold context"),
            _read(public_dir / "threshold.joint.pk", "joint public key"),
        )
    raise InvalidInput(f"unknown mode {mode!r}; choose one of {MODES}")
