"""Key ceremony: what each site generates, what it publishes, and what never leaves it.

Two folders per party (`keyfiles.KeyPaths`): `site_dir` (secret, never copied off the site,
files mode 0600) and `public_dir` (public material the hub relays between sites and hands to the
aggregator, 0644). Which ceremony a mode has, and how its backends load these files, is its
scheme's spec (`he.registry`); this module holds the ceremonies themselves.

- ckks (DeepProtect, one shared key): every site publishes an X25519 identity key; the lead
  site generates the CKKS key, publishes the public context (no secret key, for the aggregator)
  and, for each other site, the secret context sealed to that site's identity key
  (X25519 + HKDF-SHA256 + ChaCha20-Poly1305). The hub relays sealed blobs it cannot open.
- aes (the same trust model, additive AES-256-CTR encryption): the same steps, with a 256-bit key
  instead of a CKKS context; the public file holds the parameters and the key's fingerprint.
  Any scheme registered with `shared_key_spec` gets these steps (`shared_keygen`).
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
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medcloud.errors import InvalidInput
from medcloud.federated import ceremony, threshold_chain
from medcloud.federated.he.base import HEBackend
from medcloud.federated.he.registry import BackendSpec, Decryption, KeygenStep, SharedKey, backend_spec, modes_where
from medcloud.federated.keyfiles import KeyPaths, read_key, write_key

__all__ = [
    "KeyPaths",
    "aggregator_backend",
    "ckks_keygen",
    "confirm_each_other",
    "ensure_identity",
    "keygen_modes",
    "published_sites",
    "recovered_backend",
    "seal",
    "shared_ceremony",
    "shared_key_modes",
    "shared_key_spec",
    "shared_keygen",
    "site_backend",
    "threshold_ceremony",
    "threshold_keygen",
    "threshold_of",
    "threshold_recover",
    "threshold_release",
    "unseal",
]

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
        write_key(paths.identity_key, raw, secret=True)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    write_key(paths.identity_pub(), pub)
    return key


def published_sites(public_dir: Path) -> list[str]:
    suffix = ".x25519.pub"
    return sorted(p.name[len("identity-") : -len(suffix)] for p in public_dir.glob(f"identity-*{suffix}"))


# --- shared key (ckks, aes, ...): one key, sealed site to site -----------------------------------


def shared_key_modes() -> list[str]:
    """The registered modes whose sites share one key (`BackendSpec.shared`)."""
    return modes_where(lambda spec: spec.shared is not None)


def keygen_modes() -> list[str]:
    """The registered modes that have a key ceremony (`medcloud fl keygen --mode`)."""
    return modes_where(lambda spec: spec.keygen is not None)


def _shared_key(mode: str) -> SharedKey:
    shared = backend_spec(mode).shared
    if shared is None:
        raise InvalidInput(f"{mode!r} is not a shared-key mode; choose one of {', '.join(shared_key_modes())}")
    return shared


def _seal_domain(mode: str, shared: SharedKey) -> str:
    return mode if shared.seal_domain is None else shared.seal_domain


def shared_keygen(
    paths: KeyPaths, lead: bool, mode: str = "ckks", parties: Sequence[str] = (), ceremony_id: str = ""
) -> list[str]:
    """One step of a shared-key ceremony (ckks, aes, ...) for this site; returns what it did.

    Run it on every site (publishes its identity and prints its fingerprint); confirm the other
    parties' fingerprints out of band (`ceremony.trust`); run it on the lead with the explicit
    party list, which seals the key to those parties only and signs the ceremony manifest; run it
    again on the others, which check the manifest against their own confirmations and unseal.
    Each run is idempotent. See `medcloud.federated.ceremony` for what each check defeats.
    """
    shared = _shared_key(mode)
    label = mode.upper()
    key = ensure_identity(paths)
    signer = ceremony.ensure_signing(paths)
    done = [f"identity published for {paths.site}; fingerprint {ceremony.own_fingerprint(paths)}"]
    secret_path = paths.shared_secret(mode)
    if lead:
        return done + _lead_step(paths, mode, shared, signer, tuple(parties))
    if secret_path.is_file():
        return done
    manifest = ceremony.read_manifest(paths, mode)
    if manifest is None:
        return [*done, f"waiting for the lead's signed {mode} ceremony"]
    if ceremony_id and manifest.ceremony_id != ceremony_id:
        raise InvalidInput(
            f"the relayed {mode} ceremony is {manifest.ceremony_id}, not {ceremony_id} that the lead announced: "
            "refusing it (an earlier ceremony replayed?)"
        )
    public_file, sealed_file = paths.shared_public(mode), paths.shared_sealed(paths.site, mode)
    if not public_file.is_file() or ceremony.sha256_file(public_file) != manifest.public_sha256:
        raise InvalidInput(f"the relayed {label} public key is not the one the lead signed: refusing it")
    if not sealed_file.is_file() or ceremony.sha256_file(sealed_file) != manifest.sealed_sha256.get(paths.site):
        raise InvalidInput(
            f"the sealed {label} key for {paths.site} is not the one the lead signed (replayed or altered): refusing it"
        )
    aad = ceremony.seal_aad(
        _seal_domain(mode, shared),
        manifest.ceremony_id,
        manifest.public_sha256,
        manifest.parties,
        manifest.lead,
        paths.site,
    )
    secret = unseal(key, sealed_file.read_bytes(), aad)
    write_key(secret_path, secret, secret=True)
    write_key(paths.site_dir / f"{mode}.ceremony.json", manifest.to_bytes(), secret=True)  # what this site accepted
    accepted = f"ceremony {manifest.ceremony_id}, led by {manifest.lead}; shared with {', '.join(manifest.parties)}"
    return [*done, "secret key unsealed", f"accepted {accepted}"]


def _lead_step(
    paths: KeyPaths, mode: str, shared: SharedKey, signer: Ed25519PrivateKey, parties: tuple[str, ...]
) -> list[str]:
    label = mode.upper()
    if not parties:
        raise InvalidInput(f"the lead of a {mode} ceremony names every party: --parties {paths.site},B,C,...")
    if paths.site not in parties:
        parties = (paths.site, *parties)
    if len(set(parties)) != len(parties):
        raise InvalidInput(f"a party is named twice in {','.join(parties)}")
    parties = tuple(sorted(parties))
    existing = ceremony.read_manifest(paths, mode, lead=paths.site)
    if existing is not None:
        if existing.parties != parties:
            raise InvalidInput(
                f"a {mode} ceremony with parties {', '.join(existing.parties)} exists; a new party list needs a new "
                f"key (remove the public folder's and the sites' {mode} files and start again)"
            )
        return [f"{label} ceremony {existing.ceremony_id} already complete"]
    waiting = [p for p in parties if ceremony.published_identity(paths, p) is None]
    if waiting:
        return [f"waiting for {', '.join(waiting)} to publish an identity"]
    identities = {p: ceremony.verified_identity(paths, p) for p in parties}  # refuses unconfirmed or substituted
    done: list[str] = []
    secret_path = paths.shared_secret(mode)
    if not secret_path.is_file():
        secret, public = shared.generate()
        write_key(secret_path, secret, secret=True)
        write_key(paths.shared_public(mode), public)
        done.append(f"{label} key generated; public {shared.public_name} published")
    secret = secret_path.read_bytes()
    public_sha = ceremony.sha256_file(paths.shared_public(mode))
    ceremony_id = ceremony.new_ceremony_id()
    sealed: dict[str, str] = {}
    for other in parties:
        if other == paths.site:
            continue
        aad = ceremony.seal_aad(_seal_domain(mode, shared), ceremony_id, public_sha, parties, paths.site, other)
        write_key(paths.shared_sealed(other, mode), seal(identities[other][0], secret, aad))
        sealed[other] = ceremony.sha256_file(paths.shared_sealed(other, mode))
        done.append(f"secret key sealed for {other}")
    fingerprints = {p: ceremony.fingerprint_of(p, *identities[p]) for p in parties}
    manifest = ceremony.Manifest(mode, ceremony_id, paths.site, parties, fingerprints, public_sha, sealed)
    ceremony.write_manifest(paths, manifest, signer)
    write_key(paths.site_dir / f"{mode}.ceremony.json", manifest.to_bytes(), secret=True)
    done.append(f"{label} ceremony {ceremony_id} signed; tell the other sites this id on your second channel")
    return done


def ckks_keygen(paths: KeyPaths, lead: bool) -> list[str]:
    """The CKKS ceremony step (see `shared_keygen`)."""
    return shared_keygen(paths, lead, "ckks")


def shared_ceremony(paths: Sequence[KeyPaths], mode: str) -> None:
    """Every site's steps on one machine (simulations and tests, where one operator holds every
    folder, so reading a fingerprint off the disk is the out-of-band confirmation): identities,
    mutual trust, then the first site (the lead) generates, seals and signs, then the others unseal."""
    confirm_each_other(paths)
    parties = [p.site for p in paths]
    shared_keygen(paths[0], True, mode, parties)
    for p in paths[1:]:
        shared_keygen(p, False, mode)


def shared_key_spec(
    name: str,
    summary: str,
    shared: SharedKey,
    what: str,
    supports_deepprotect: bool = True,
    decryption: Decryption = "sites",
    weight_unit: float = 1.0,
) -> BackendSpec:
    """The spec of a scheme whose sites share one key: its backends load the key files this
    module's ceremony writes (`what` names the scheme in messages, e.g. "CKKS")."""

    def for_site(paths: KeyPaths) -> HEBackend:
        hint = f"run `medcloud fl keygen --mode {name}`"
        return shared.load(read_key(paths.shared_secret(name), f"{what} secret key ({hint})"))

    def for_aggregator(public_dir: Path) -> HEBackend:
        return shared.load(read_key(public_dir / f"{name}.public", f"{what} public {shared.public_name}"))

    def in_memory() -> tuple[HEBackend, HEBackend]:
        secret, public = shared.generate()
        return shared.load(secret), shared.load(public)

    def keygen(paths: KeyPaths, step: KeygenStep) -> list[str]:
        return shared_keygen(paths, step.lead, name, step.parties, step.ceremony)

    def ceremony(paths: Sequence[KeyPaths]) -> None:
        shared_ceremony(paths, name)

    return BackendSpec(
        name,
        summary,
        decryption,
        for_site,
        for_aggregator,
        shared=shared,
        keygen=keygen,
        ceremony=ceremony,
        in_memory=in_memory,
        supports_deepprotect=supports_deepprotect,
        weight_unit=weight_unit,
    )


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

    Run it once on every site first (it publishes the site's identity and prints its fingerprint);
    confirm every other party's fingerprint out of band (`medcloud fl trust`); then run it in chain
    order. Each site checks the signed links before its own (`threshold_chain.verify_chain`: the
    context, party list, t and previous public key are the ones their authors signed, with the keys
    this site confirmed), builds on them and signs its own link. `threshold` t < N makes the key
    t-of-N: a site also seals its Shamir shares, to confirmed identities only, once every party's
    chain link is there (rerun it if it says it is waiting). Without `threshold`: N-of-N, or the t
    the first party published.
    """
    from medcloud.federated.he import threshold as thr  # OpenFHE: imports only on CPython 3.10

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
    ensure_identity(paths)
    signer = ceremony.ensure_signing(paths)
    done = [f"identity published for {paths.site}; fingerprint {ceremony.own_fingerprint(paths)}"]
    others = [p for p in parties if p != paths.site]
    if not any(p in ceremony.trusted_parties(paths) for p in others):  # a first run: nothing confirmed yet
        return [
            *done,
            f"confirm the fingerprints of {', '.join(others)} on a second channel "
            "(`medcloud fl trust --party P --fingerprint CODE`), then run keygen again",
        ]
    waiting = threshold_chain.require_trusted(paths, parties)  # refuses a party not confirmed here
    if waiting:
        return [*done, f"waiting for {', '.join(waiting)} to publish an identity"]
    if index == 0:
        if not paths.threshold_context.is_file():
            write_key(paths.threshold_context, thr.generate_context())
            write_key(paths.threshold_parties, json.dumps(parties).encode())
            if shared:
                write_key(paths.threshold_t, json.dumps({"parties": parties, "threshold": t}).encode())
            done.append("threshold crypto context published")
    elif not threshold_chain.link_path(paths.public_dir, parties[index - 1]).is_file():
        return [*done, f"waiting for the signed public key of {parties[index - 1]}"]
    if threshold_of(paths.public_dir, parties) != t:
        raise InvalidInput(f"threshold {t} differs from the one the first party published")
    link = threshold_chain.link_path(paths.public_dir, paths.site)
    if paths.threshold_share.is_file() and link.is_file():
        done.append("share already generated")
    else:
        if index > 0:  # everything this link builds on, as its authors signed it
            threshold_chain.verify_chain(
                paths.public_dir, parties, t, lambda p: ceremony.verified_identity(paths, p)[1], index, paths.site
            )
        if not paths.threshold_share.is_file():
            context = read_key(paths.threshold_context, "threshold context")
            previous = (
                None if index == 0 else read_key(paths.threshold_pk(index - 1), f"public key of {parties[index - 1]}")
            )
            pk, share = thr.keygen_share(context, previous)
            write_key(paths.threshold_share, share, secret=True)
            write_key(paths.threshold_pk(index), pk)
            done.append(f"key share kept; public key {index + 1}/{len(parties)} published")
            if index == len(parties) - 1:
                write_key(paths.threshold_joint, pk)
                done.append("joint public key published")
        threshold_chain.sign_link(paths, signer, parties, t)
        done.append("chain link signed")
    threshold_chain.record_accepted(paths, parties, t)
    if shared:
        done.extend(_seal_key_shares(paths, parties, t, signer))
    return done


def _share_label(kind: str, aad: bytes, context_sha: str) -> str:
    return f"{kind}|{aad.decode()}|{context_sha}"


def _seal_key_shares(paths: KeyPaths, parties: list[str], t: int, signer: Ed25519PrivateKey) -> list[str]:
    """Shamir-share this site's key share and seal each share to its holder's confirmed identity
    (once, all at once, once the whole chain is signed), each sealed blob signed by this site."""
    from medcloud.federated.he import threshold as thr  # OpenFHE: imports only on CPython 3.10

    others = [p for p in parties if p != paths.site]
    if all(paths.threshold_sealed_share(paths.site, o).is_file() for o in others):
        return ["key shares already sealed"]
    if not threshold_chain.link_path(paths.public_dir, parties[-1]).is_file():
        return [f"waiting for the whole signed chain (up to {parties[-1]}) to seal the key shares"]
    threshold_chain.check_site(paths)
    identities = {o: ceremony.verified_identity(paths, o) for o in others}
    context_sha = ceremony.sha256_file(paths.threshold_context)
    shares = thr.share_key(
        read_key(paths.threshold_context, "threshold context"),
        paths.threshold_share.read_bytes(),
        len(parties),
        t,
        parties.index(paths.site) + 1,
    )
    for o in others:  # every share of one polynomial, written together
        aad = _keyshare_aad(paths.site, o, t, parties)
        path = paths.threshold_sealed_share(paths.site, o)
        write_key(path, seal(identities[o][0], shares[parties.index(o) + 1], aad))
        threshold_chain.sign_file(signer, path, _share_label("keyshare", aad, context_sha))
    return [f"key share split {t}-of-{len(parties)}; shares sealed for {', '.join(others)}"]


def _own_share_of(paths: KeyPaths, parties: list[str], missing: str) -> bytes:
    """This site's (unsealed) Shamir share of `missing`'s key: signed by `missing`, checked against its header."""
    from medcloud.federated.he import threshold as thr  # OpenFHE: imports only on CPython 3.10

    t = threshold_of(paths.public_dir, parties)
    key = ensure_identity(paths)
    path = paths.threshold_sealed_share(missing, paths.site)
    sealed = read_key(path, f"{missing}'s key share for {paths.site}")
    aad = _keyshare_aad(missing, paths.site, t, parties)
    label = _share_label("keyshare", aad, ceremony.sha256_file(paths.threshold_context))
    threshold_chain.verify_file(paths, missing, path, label, f"the sealed share of {missing}'s key for {paths.site}")
    share = unseal(key, sealed, aad)
    meta = thr.key_share_meta(share)
    if (meta["of"], meta["holder"]) != (parties.index(missing) + 1, parties.index(paths.site) + 1):
        raise InvalidInput("sealed key share is not the one its name says")
    return share


def _check_dropout(paths: KeyPaths, missing: str, to: str) -> tuple[list[str], int]:
    parties, t = threshold_chain.check_site(paths)  # the chain this site agreed to, as signed
    if missing not in parties or to not in parties or missing in (to, paths.site):
        raise InvalidInput(f"cannot recover {missing!r} at {to!r} from {paths.site!r} among {parties}")
    if t >= len(parties):
        raise InvalidInput("this key is N-of-N: a missing site cannot be recovered")
    return parties, t


def threshold_release(paths: KeyPaths, missing: str, to: str) -> list[str]:
    """On a surviving site: re-seal its share of `missing`'s key to the recovering site `to`
    (to `to`'s confirmed identity only), signed by this site."""
    parties, t = _check_dropout(paths, missing, to)
    if to == paths.site:
        return ["this site recovers: its own share is used directly"]
    share = _own_share_of(paths, parties, missing)
    recipient, _ = ceremony.verified_identity(paths, to)
    aad = _release_aad(missing, paths.site, to, t, parties)
    path = paths.threshold_release(missing, paths.site, to)
    write_key(path, seal(recipient, share, aad))
    label = _share_label("release", aad, ceremony.sha256_file(paths.threshold_context))
    threshold_chain.sign_file(ceremony.ensure_signing(paths), path, label)
    return [f"share of {missing}'s key sealed for {to}"]


def threshold_recover(paths: KeyPaths, missing: str) -> list[str]:
    """On the recovering site: rebuild `missing`'s key share from its own share and the released ones.

    Needs t shares in all (its own counts); fewer raise `HEError`. A released share counts only if
    its holder signed it. The rebuilt share stays in this site's secret folder (0600) and makes
    `missing`'s partial decryptions (`recovered_backend`).
    """
    from medcloud.federated.he import threshold as thr  # OpenFHE: imports only on CPython 3.10

    parties, t = _check_dropout(paths, missing, paths.site)
    key = ensure_identity(paths)
    context_sha = ceremony.sha256_file(paths.threshold_context)
    shares = [_own_share_of(paths, parties, missing)]
    for holder in parties:
        release = paths.threshold_release(missing, holder, paths.site)
        if holder not in (missing, paths.site) and release.is_file():
            aad = _release_aad(missing, holder, paths.site, t, parties)
            what = f"the share of {missing}'s key released by {holder}"
            threshold_chain.verify_file(paths, holder, release, _share_label("release", aad, context_sha), what)
            share = unseal(key, release.read_bytes(), aad)
            meta = thr.key_share_meta(share)
            if (meta["of"], meta["holder"]) != (parties.index(missing) + 1, parties.index(holder) + 1):
                raise InvalidInput(f"released key share from {holder} is not the one its name says")
            shares.append(share)
    recovered = thr.recover_key(read_key(paths.threshold_context, "threshold context"), shares)
    write_key(paths.threshold_recovered(missing), recovered, secret=True)
    return [f"{missing}'s key share recovered from {len(shares)} shares ({t}-of-{len(parties)})"]


def threshold_ceremony(paths: Sequence[KeyPaths], threshold: int | None = None) -> None:
    """Every site's steps of a threshold key chain on one machine (simulations and tests, where one
    operator holds every folder, so reading a fingerprint off the disk is the out-of-band
    confirmation): identities, mutual trust, then the chain in order (twice for t-of-N: the
    sealed shares need the whole chain). Runs OpenFHE in process or through the sidecar: the step is
    the threshold scheme's registered `keygen`, so this module never imports the bridge."""
    keygen = backend_spec("threshold").keygen
    if keygen is None:
        raise InvalidInput("the threshold scheme has no key ceremony registered")
    confirm_each_other(paths)
    parties = tuple(p.site for p in paths)
    for _ in range(1 if threshold is None or threshold >= len(parties) else 2):
        for p in paths:
            keygen(p, KeygenStep(parties=parties, threshold=threshold))


def confirm_each_other(paths: Sequence[KeyPaths]) -> None:
    """Identities for every site, and every site trusting every other (one operator, one machine)."""
    for p in paths:
        ensure_identity(p)
        ceremony.ensure_signing(p)
    for p in paths:
        for q in paths:
            if q.site != p.site:
                ceremony.trust(p, q.site, ceremony.own_fingerprint(q))


# --- loading backends --------------------------------------------------------------------------


def site_backend(mode: str, paths: KeyPaths) -> HEBackend:
    """The backend a site trains with: it can decrypt (ckks, aes) or make partial decryptions."""
    return backend_spec(mode).for_site(paths)


def aggregator_backend(mode: str, public_dir: Path) -> HEBackend:
    """The backend the aggregator runs: public material only, so it cannot decrypt."""
    return backend_spec(mode).for_aggregator(public_dir)


def recovered_backend(paths: KeyPaths, missing: str, mode: str = "threshold") -> HEBackend:
    """On the recovering site: a backend that makes `missing`'s partial decryptions from the key
    share `threshold_recover` rebuilt (t-of-N schemes: `BackendSpec.for_recovered`)."""
    build = backend_spec(mode).for_recovered
    if build is None:
        raise InvalidInput(f"mode {mode!r} has no key shares to recover")
    return build(paths, missing)
