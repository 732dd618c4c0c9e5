"""Who takes part in a shared-key ceremony, and how a site knows the relay changed nothing.

The hub relays the public key folder between sites, so a site must not trust what it finds there
merely because it is there. Three things close that gap (issue: "the key ceremony can be hijacked
by the relay"):

- **Identities with fingerprints confirmed out of band.** Each site has an X25519 key (to receive
  sealed secrets) and an Ed25519 key (to sign), published as `identity-<site>.x25519.pub` and
  `identity-<site>.ed25519.pub`. Its fingerprint is a short code over its name and both public
  keys (`ABCD-EF01-...`); operators read it to each other on a second channel (phone, meeting)
  and record it with `medcloud fl trust`. A site's trust store (`trusted-parties.json`, in its
  secret folder) is the only source of who the other parties are: a published identity whose
  fingerprint differs from the recorded one is refused as a substitution.
- **An explicit party list.** The lead seals the shared key only to the parties named with
  `--parties`, each checked against its trust store, never to whoever published an identity.
- **A signed ceremony manifest.** The lead signs (Ed25519) a manifest naming the mode, a random
  ceremony id, the lead, the parties with their fingerprints, and the SHA-256 of the public key
  file and of every sealed file. A site checks the signature with the lead's confirmed key, that
  every party named is one it confirmed (so it knows who else holds the key), and the hashes of
  the files it reads. The ceremony id, the public key's hash, the party list and the lead are
  bound into each seal's AAD, so a sealed key from another ceremony does not open. A site that was
  told the ceremony id out of band (the lead prints it) can insist on it (`--ceremony`), which
  also refuses the replay of an entire earlier, validly signed ceremony.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medcloud.errors import InvalidInput
from medcloud.federated.keyfiles import KeyPaths, write_key

__all__ = [
    "Manifest",
    "ensure_signing",
    "fingerprint_of",
    "own_fingerprint",
    "published_identity",
    "read_manifest",
    "seal_aad",
    "sha256_file",
    "trust",
    "trusted_parties",
    "verified_identity",
    "write_manifest",
]

MANIFEST_FORMAT = "medcloud-fl-ceremony"
MANIFEST_VERSION = 1
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _signing_key_path(paths: KeyPaths) -> Path:
    return paths.site_dir / "identity.ed25519"


def signing_pub_path(paths: KeyPaths, site: str | None = None) -> Path:
    return paths.public_dir / f"identity-{site or paths.site}.ed25519.pub"


def _trust_path(paths: KeyPaths) -> Path:
    return paths.site_dir / "trusted-parties.json"


def manifest_path(paths: KeyPaths, mode: str) -> Path:
    return paths.public_dir / f"{mode}.ceremony.json"


def signature_path(paths: KeyPaths, mode: str) -> Path:
    return paths.public_dir / f"{mode}.ceremony.sig"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_signing(paths: KeyPaths) -> Ed25519PrivateKey:
    """This site's Ed25519 signing key: created once (0600), public half published."""
    path = _signing_key_path(paths)
    if path.is_file():
        key = Ed25519PrivateKey.from_private_bytes(path.read_bytes())
    else:
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        write_key(path, raw, secret=True)
    write_key(signing_pub_path(paths), key.public_key().public_bytes(*_RAW))
    return key


def fingerprint_of(site: str, x25519_pub: bytes, ed25519_pub: bytes) -> str:
    """A short code over a party's name and both public keys, to read aloud: 8 groups of 4 hex digits."""
    digest = hashlib.sha256(b"medcloud-fl-identity|" + site.encode() + b"|" + x25519_pub + ed25519_pub).hexdigest()
    return "-".join(digest[i : i + 4] for i in range(0, 32, 4)).upper()


def published_identity(paths: KeyPaths, party: str) -> tuple[bytes, bytes] | None:
    """The public keys `party` published in the relayed folder, or None if it has not yet."""
    x, ed = paths.identity_pub(party), signing_pub_path(paths, party)
    if not (x.is_file() and ed.is_file()):
        return None
    x_pub, ed_pub = x.read_bytes(), ed.read_bytes()
    if len(x_pub) != 32 or len(ed_pub) != 32:
        raise InvalidInput(f"{party}'s published identity is malformed")
    return x_pub, ed_pub


def own_fingerprint(paths: KeyPaths) -> str:
    ident = published_identity(paths, paths.site)
    if ident is None:
        raise InvalidInput(f"{paths.site} has no published identity yet: run `medcloud fl keygen` first")
    return fingerprint_of(paths.site, *ident)


def trusted_parties(paths: KeyPaths) -> dict[str, str]:
    """party -> fingerprint this site's operator confirmed out of band (this site itself included)."""
    path = _trust_path(paths)
    trusted: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    ident = published_identity(paths, paths.site)
    if ident is not None:  # a site trusts itself: its own keys are in its own secret folder
        trusted[paths.site] = fingerprint_of(paths.site, *ident)
    return trusted


def _normal(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


def trust(paths: KeyPaths, party: str, fingerprint: str) -> str:
    """Record that `party`'s fingerprint was confirmed out of band; refuses if the published
    identity does not match it (the relay substituted it, or it was misread)."""
    ident = published_identity(paths, party)
    if ident is None:
        raise InvalidInput(f"{party} has not published an identity in {paths.public_dir} yet")
    actual = fingerprint_of(party, *ident)
    if _normal(actual) != _normal(fingerprint):
        raise InvalidInput(
            f"the identity published for {party} has fingerprint {actual}, not the {fingerprint} you confirmed: "
            "do not trust it (the relay may have substituted it); ask the site to read its fingerprint again"
        )
    path = _trust_path(paths)
    trusted: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    trusted[party] = actual
    write_key(path, json.dumps(trusted, indent=2, sort_keys=True).encode(), secret=True)
    return actual


def verified_identity(paths: KeyPaths, party: str) -> tuple[bytes, bytes]:
    """`party`'s published keys, only if they match the fingerprint this site confirmed."""
    confirmed = trusted_parties(paths).get(party)
    if confirmed is None:
        raise InvalidInput(
            f"{party}'s fingerprint has not been confirmed at {paths.site}: get it from {party} on a second "
            f"channel and run `medcloud fl trust --party {party} --fingerprint CODE`"
        )
    ident = published_identity(paths, party)
    if ident is None:
        raise InvalidInput(f"{party} has not published an identity yet")
    if fingerprint_of(party, *ident) != confirmed:
        raise InvalidInput(
            f"the identity published for {party} does not match the fingerprint confirmed at {paths.site}: "
            "refusing it (the relay may have substituted it)"
        )
    return ident


@dataclass(frozen=True)
class Manifest:
    mode: str
    ceremony_id: str
    lead: str
    parties: tuple[str, ...]
    fingerprints: dict[str, str]
    public_sha256: str
    sealed_sha256: dict[str, str]

    def to_bytes(self) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "mode": self.mode,
            "ceremony_id": self.ceremony_id,
            "lead": self.lead,
            "parties": list(self.parties),
            "fingerprints": self.fingerprints,
            "public_sha256": self.public_sha256,
            "sealed_sha256": self.sealed_sha256,
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode()


def new_ceremony_id() -> str:
    return os.urandom(8).hex()


def seal_aad(domain: str, ceremony_id: str, public_sha256: str, parties: tuple[str, ...], lead: str, to: str) -> bytes:
    """What a sealed key is bound to: its ceremony, the public key, who shares it, who sealed it, for whom."""
    return "|".join((domain, ceremony_id, public_sha256, ",".join(parties), lead, to)).encode()


def write_manifest(paths: KeyPaths, manifest: Manifest, signer: Ed25519PrivateKey) -> None:
    data = manifest.to_bytes()
    write_key(manifest_path(paths, manifest.mode), data)
    write_key(signature_path(paths, manifest.mode), signer.sign(data))


def read_manifest(paths: KeyPaths, mode: str, lead: str | None = None) -> Manifest | None:
    """The relayed manifest, verified: signed by its lead's confirmed key, naming only confirmed
    parties (with the fingerprints this site confirmed), this site among them. None if absent."""
    mpath, spath = manifest_path(paths, mode), signature_path(paths, mode)
    if not mpath.is_file():
        return None
    data = mpath.read_bytes()
    try:
        doc = json.loads(data)
        if doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION or doc.get("mode") != mode:
            raise ValueError("not a ceremony manifest of this mode")
        manifest = Manifest(
            mode,
            str(doc["ceremony_id"]),
            str(doc["lead"]),
            tuple(str(p) for p in doc["parties"]),
            {str(k): str(v) for k, v in doc["fingerprints"].items()},
            str(doc["public_sha256"]),
            {str(k): str(v) for k, v in doc["sealed_sha256"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"the relayed {mode} ceremony manifest is unreadable: {exc}") from exc
    if lead is not None and manifest.lead != lead:
        raise InvalidInput(f"the {mode} ceremony was led by {manifest.lead}, not the expected {lead}")
    _, lead_ed = verified_identity(paths, manifest.lead)
    try:
        Ed25519PublicKey.from_public_bytes(lead_ed).verify(spath.read_bytes() if spath.is_file() else b"", data)
    except InvalidSignature as exc:
        raise InvalidInput(
            f"the {mode} ceremony manifest is not signed by {manifest.lead}'s confirmed key: refusing it"
        ) from exc
    if paths.site not in manifest.parties:
        raise InvalidInput(f"{paths.site} is not a party of the {mode} ceremony {manifest.ceremony_id}")
    trusted = trusted_parties(paths)
    for party in manifest.parties:
        if trusted.get(party) is None:
            raise InvalidInput(
                f"the {mode} key would be shared with {party}, whose fingerprint was not confirmed at {paths.site}: "
                "refusing it (confirm it with `medcloud fl trust` if it really is a party)"
            )
        if manifest.fingerprints.get(party) != trusted[party]:
            raise InvalidInput(
                f"the lead sealed the {mode} key to an identity for {party} that {paths.site} did not confirm"
            )
    return manifest
