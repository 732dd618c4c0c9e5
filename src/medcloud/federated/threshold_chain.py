"""The threshold key chain, signed: what each party published, what it built on, checked by every site.

A threshold key is a chain: the first party publishes the crypto context, the party list and (t-of-N)
the threshold; each party i builds its public key on party i-1's; the last one's is the joint key.
The hub relays every link, so a relay that substitutes the context, a previous public key or the
joint key would put a secret of its own into the chain, and with the partial decryptions the
aggregator legitimately receives it could then decrypt a single site's update.

So each party signs (Ed25519, its ceremony identity, `ceremony.ensure_signing`) a *link*
(`threshold.link-<site>.json` + `.sig`) naming its place in the chain and the SHA-256 of everything
it built on and published: context, party list, t, the previous public key, its own public key
and (the last party) the joint key. Every site checks every link it reads with the fingerprints
*its own* operator confirmed (`medcloud fl trust`), against the party list and t it was given itself
(recorded in its secret folder when it joined the chain), before it builds its own link, and again
before it encrypts anything or makes a partial decryption. The sealed Shamir key shares and the
released shares of a t-of-N key are signed by their author too (a detached `.sig` next to each), so
a relay can neither hand a site a share it made nor learn one by substituting an identity (sealing
goes only to confirmed identities).

The aggregator has no trust store of its own: it checks that the chain it reads is complete and
self-consistent (every link signed by the identity published under its party's name, every hash
matching); the defence against a lying relay is the sites' check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medcloud.errors import InvalidInput
from medcloud.federated import ceremony
from medcloud.federated.keyfiles import KeyPaths, write_key

__all__ = [
    "accepted",
    "check_aggregator",
    "check_site",
    "link_path",
    "record_accepted",
    "require_trusted",
    "sign_file",
    "sign_link",
    "verify_chain",
    "verify_file",
]

LINK_FORMAT = "medcloud-fl-threshold-link"
LINK_VERSION = 1
_LINK_DOMAIN = b"medcloud-fl-threshold-link|"
_FILE_DOMAIN = b"medcloud-fl-threshold-file|"

KeyOf = Callable[[str], bytes]  # party -> its Ed25519 public key (confirmed at a site)


def link_path(public_dir: Path, site: str) -> Path:
    return public_dir / f"threshold.link-{site}.json"


def _sig_path(path: Path) -> Path:
    return path.with_name(path.name + ".sig") if path.suffix != ".json" else path.with_suffix(".sig")


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _accepted_path(paths: KeyPaths) -> Path:
    return paths.site_dir / "threshold.accepted.json"


def record_accepted(paths: KeyPaths, parties: list[str], t: int) -> None:
    """The party list and t this site's operator gave it (kept in its secret folder): the chain it
    checks before every use of its key share is checked against these, not the relayed copies."""
    write_key(_accepted_path(paths), json.dumps({"parties": parties, "threshold": t}).encode(), secret=True)


def accepted(paths: KeyPaths) -> tuple[list[str], int]:
    path = _accepted_path(paths)
    if not path.is_file():
        raise InvalidInput(
            f"{paths.site} has not joined a signed threshold key chain (no {path.name}): "
            "run `medcloud fl keygen --mode threshold` for it"
        )
    doc = json.loads(path.read_bytes())
    return [str(p) for p in doc["parties"]], int(doc["threshold"])


def require_trusted(paths: KeyPaths, parties: list[str]) -> list[str]:
    """The parties whose identities are not published yet; refuses a published one not confirmed here."""
    waiting = [p for p in parties if ceremony.published_identity(paths, p) is None]
    for p in parties:
        if p not in waiting:
            ceremony.verified_identity(paths, p)  # InvalidInput: unconfirmed or substituted
    return waiting


def _confirmed_key(paths: KeyPaths) -> KeyOf:
    return lambda party: ceremony.verified_identity(paths, party)[1]


def _published_key(public_dir: Path) -> KeyOf:
    def key_of(party: str) -> bytes:
        path = public_dir / f"identity-{party}.ed25519.pub"
        if not path.is_file():
            raise InvalidInput(f"{party} has published no signing identity: the threshold chain cannot be checked")
        return path.read_bytes()

    return key_of


def _verify(key: bytes, signature: Path, message: bytes, what: str, party: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature.read_bytes() if signature.is_file() else b"", message)
    except (InvalidSignature, ValueError) as exc:
        raise InvalidInput(f"{what} is not signed by {party}'s confirmed key: refusing it (forged or altered)") from exc


def sign_link(paths: KeyPaths, signer: Ed25519PrivateKey, parties: list[str], t: int) -> None:
    """This site's signed link: its place in the chain and the hash of what it built on and published."""
    index = parties.index(paths.site)
    public = paths.public_dir
    doc = {
        "format": LINK_FORMAT,
        "version": LINK_VERSION,
        "site": paths.site,
        "index": index,
        "parties": parties,
        "threshold": t,
        "context_sha256": _sha(paths.threshold_context),
        "parties_sha256": _sha(paths.threshold_parties),
        "t_sha256": _sha(paths.threshold_t),
        "previous_sha256": None if index == 0 else _sha(paths.threshold_pk(index - 1)),
        "public_sha256": _sha(paths.threshold_pk(index)),
        "joint_sha256": _sha(paths.threshold_joint) if index == len(parties) - 1 else None,
    }
    data = json.dumps(doc, indent=2, sort_keys=True).encode()
    path = link_path(public, paths.site)
    write_key(path, data)
    write_key(_sig_path(path), signer.sign(_LINK_DOMAIN + data))


def _read_link(public_dir: Path, party: str, key_of: KeyOf) -> dict[str, Any] | None:
    path = link_path(public_dir, party)
    if not path.is_file():
        return None
    data = path.read_bytes()
    _verify(key_of(party), _sig_path(path), _LINK_DOMAIN + data, f"the threshold key link of {party}", party)
    try:
        doc: dict[str, Any] = json.loads(data)
    except ValueError as exc:
        raise InvalidInput(f"the threshold key link of {party} is unreadable") from exc
    if doc.get("format") != LINK_FORMAT or doc.get("version") != LINK_VERSION:
        raise InvalidInput(f"the threshold key link of {party} is not a link of this format")
    return doc


def verify_chain(
    public_dir: Path, parties: list[str], t: int, key_of: KeyOf, upto: int | None = None, where: str = "this site"
) -> None:
    """Check links 0..upto-1 (all, with the joint key, when `upto` is None) against `parties` and `t`:
    each signed by its party's key, each hash matching the files in `public_dir` and the previous link.
    Raises InvalidInput naming what was substituted; a missing link is refused too."""
    n = len(parties) if upto is None else upto
    files = KeyPaths("", public_dir, public_dir)
    published = files.threshold_parties
    if not published.is_file() or json.loads(published.read_bytes()) != parties:
        raise InvalidInput(
            f"the relayed threshold party list is not the {','.join(parties)} agreed at {where}: refusing it"
        )
    previous_public: str | None = None
    for index in range(n):
        party = parties[index]
        doc = _read_link(public_dir, party, key_of)
        if doc is None:
            raise InvalidInput(f"{party} has not published a signed threshold key link: the chain is incomplete")
        if doc.get("site") != party or doc.get("index") != index:
            raise InvalidInput(f"the threshold key link signed by {party} is not for place {index} of the chain")
        if doc.get("parties") != parties or doc.get("threshold") != t:
            raise InvalidInput(
                f"{party} signed a chain for parties {doc.get('parties')} with t={doc.get('threshold')}, "
                f"not the {','.join(parties)} with t={t} agreed at {where}: refusing it"
            )
        checks = [
            ("context_sha256", files.threshold_context, "threshold crypto context"),
            ("parties_sha256", files.threshold_parties, "threshold party list"),
            ("t_sha256", files.threshold_t, "threshold t-of-N file"),
            ("public_sha256", files.threshold_pk(index), f"public key of {party}"),
        ]
        if index == len(parties) - 1:
            checks.append(("joint_sha256", files.threshold_joint, "joint public key"))
        if index > 0:
            checks.append(("previous_sha256", files.threshold_pk(index - 1), f"public key of {parties[index - 1]}"))
        for field, path, what in checks:
            if doc.get(field) != _sha(path):
                raise InvalidInput(f"the relayed {what} is not the one {party} signed: refusing it (substituted?)")
        if index > 0 and doc.get("previous_sha256") != previous_public:
            raise InvalidInput(f"{party} built on a public key of {parties[index - 1]} other than the one it signed")
        if index == len(parties) - 1 and doc.get("joint_sha256") != doc.get("public_sha256"):
            raise InvalidInput(f"the joint public key {party} signed is not its link's public key")
        previous_public = doc.get("public_sha256")
    if (t < len(parties)) != files.threshold_t.is_file():
        raise InvalidInput("the relayed threshold t-of-N file does not match the agreed threshold")


def check_site(paths: KeyPaths) -> tuple[list[str], int]:
    """Before a site encrypts or makes a partial decryption: the whole chain, checked with the
    fingerprints its operator confirmed against the parties and t it was given."""
    parties, t = accepted(paths)
    verify_chain(paths.public_dir, parties, t, _confirmed_key(paths), where=paths.site)
    return parties, t


def check_aggregator(public_dir: Path) -> None:
    """The aggregator's check: the chain it reads is complete and self-consistent."""
    files = KeyPaths("", public_dir, public_dir)
    if not files.threshold_parties.is_file():
        raise InvalidInput(f"no threshold party list in {public_dir}")
    parties = [str(p) for p in json.loads(files.threshold_parties.read_bytes())]
    t = len(parties)
    if files.threshold_t.is_file():
        t = int(json.loads(files.threshold_t.read_bytes())["threshold"])
    verify_chain(public_dir, parties, t, _published_key(public_dir), where="the aggregator")


def _file_message(path: Path, label: str) -> bytes:
    return _FILE_DOMAIN + label.encode() + b"|" + hashlib.sha256(path.read_bytes()).digest()


def sign_file(signer: Ed25519PrivateKey, path: Path, label: str) -> None:
    """A detached signature (`<name>.sig`) over a published file and what it is (`label`)."""
    write_key(_sig_path(path), signer.sign(_file_message(path, label)))


def verify_file(paths: KeyPaths, author: str, path: Path, label: str, what: str) -> None:
    """Refuse `path` unless `author`'s confirmed key signed it as `label`."""
    key = ceremony.verified_identity(paths, author)[1]
    _verify(key, _sig_path(path), _file_message(path, label), what, author)
