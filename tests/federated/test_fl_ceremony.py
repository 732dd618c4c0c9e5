"""The shared-key ceremony against a relay (the hub) that does not follow the protocol.

The issue's attacks: an extra identity in the relayed folder got the key sealed to it; a swapped
identity went unnoticed; an old sealed key could be replayed; nothing identified the sealer. Each
must now be refused, with a clear message, at the site.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medcloud.errors import InvalidInput
from medcloud.federated import ceremony
from medcloud.federated.keys import KeyPaths, ensure_identity, shared_keygen, site_backend

MODE = "aes"
SITES = ["a", "b", "c"]


def _setup(tmp_path: Path, sites: list[str] = SITES) -> dict[str, KeyPaths]:
    public = tmp_path / "public"
    paths = {s: KeyPaths(s, tmp_path / s, public) for s in sites}
    for s in sites:
        shared_keygen(paths[s], False, MODE)  # identities
    for s in sites:  # fingerprints confirmed pairwise on a second channel
        for o in sites:
            if o != s:
                ceremony.trust(paths[s], o, ceremony.own_fingerprint(paths[o]))
    return paths


def _mallory(tmp_path: Path) -> KeyPaths:
    """The relay's own identity, published into the relayed folder."""
    m = KeyPaths("mallory", tmp_path / "mallory", tmp_path / "public")
    ensure_identity(m)
    ceremony.ensure_signing(m)
    return m


def test_honest_ceremony_shares_one_key_among_the_named_parties(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    lead = shared_keygen(paths["a"], True, MODE, ["b", "c"])  # the lead is added to its own list
    assert any("signed" in line for line in lead)
    for s in ("b", "c"):
        assert any("secret key unsealed" in line for line in shared_keygen(paths[s], False, MODE))
    v = np.array([1.5, -2.0])
    b, c = site_backend(MODE, paths["b"]), site_backend(MODE, paths["c"])
    np.testing.assert_allclose(c.decrypt(c.deserialize(b.serialize(b.encrypt(v)))), v, atol=1e-9)
    # Idempotent, and a second run does not re-key.
    assert any("already complete" in line for line in shared_keygen(paths["a"], True, MODE, SITES))


def test_an_extra_identity_in_the_relayed_folder_gets_nothing(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    _mallory(tmp_path)
    # Naming mallory as a party is refused while nobody confirmed its fingerprint.
    with pytest.raises(InvalidInput, match="mallory's fingerprint has not been confirmed at a"):
        shared_keygen(paths["a"], True, MODE, [*SITES, "mallory"])
    assert not paths["a"].shared_secret(MODE).exists()
    # The parties named are the only recipients, whatever else the relayed folder holds.
    done = shared_keygen(paths["a"], True, MODE, SITES)
    assert not any("mallory" in line for line in done)
    assert not paths["a"].shared_sealed("mallory", MODE).exists()
    # The relay adding mallory to the signed manifest breaks the lead's signature.
    mpath = ceremony.manifest_path(paths["b"], MODE)
    doc = json.loads(mpath.read_text())
    doc["parties"] = [*doc["parties"], "mallory"]
    mpath.write_text(json.dumps(doc, indent=2, sort_keys=True))
    with pytest.raises(InvalidInput, match="not signed by a's confirmed key"):
        shared_keygen(paths["b"], False, MODE)


def test_a_swapped_identity_is_refused_by_the_lead_and_by_trust(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    m = _mallory(tmp_path)
    # The relay replaces b's published keys with its own (keeping b's name).
    for src, dst in (
        (m.identity_pub("mallory"), paths["b"].identity_pub("b")),
        (ceremony.signing_pub_path(m, "mallory"), ceremony.signing_pub_path(paths["b"], "b")),
    ):
        shutil.copyfile(src, dst)
    with pytest.raises(InvalidInput, match="identity published for b does not match the fingerprint confirmed at a"):
        shared_keygen(paths["a"], True, MODE, SITES)
    assert not paths["a"].shared_sealed("b", MODE).exists()
    # A site confirming b's real fingerprint now is told the relayed identity is not b's.
    fresh = KeyPaths("c2", tmp_path / "c2", tmp_path / "public")
    real_b = ceremony.fingerprint_of("b", _own_pub(paths["b"]), _own_sig_pub(paths["b"]))
    with pytest.raises(InvalidInput, match="do not trust it"):
        ceremony.trust(fresh, "b", real_b)


def _own_pub(p: KeyPaths) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.from_private_bytes(p.identity_key.read_bytes())
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _own_sig_pub(p: KeyPaths) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes((p.site_dir / "identity.ed25519").read_bytes())
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_swapping_an_identity_after_sealing_does_not_let_the_relay_read_or_reseal(tmp_path: Path) -> None:
    """The issue's second attack: unseal with a swapped identity, re-seal to the real one, put it back.
    The relay cannot open a seal made to the real identity, and a re-sealed blob is not the signed one."""
    paths = _setup(tmp_path)
    shared_keygen(paths["a"], True, MODE, SITES)
    m = _mallory(tmp_path)
    from medcloud.federated.keys import seal

    forged = seal(_own_pub(paths["b"]), b'{"forged": true}', b"anything")
    paths["b"].shared_sealed("b", MODE).write_bytes(forged)
    with pytest.raises(InvalidInput, match="not the one the lead signed"):
        shared_keygen(paths["b"], False, MODE)
    assert not m.shared_secret(MODE).exists() and not paths["b"].shared_secret(MODE).exists()


def test_a_replayed_sealed_key_or_ceremony_is_refused(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    shared_keygen(paths["a"], True, MODE, SITES)
    old = {
        f.name: f.read_bytes() for f in (tmp_path / "public").iterdir() if f.name.startswith(f"{MODE}.")
    }  # ceremony 1, as the relay saved it
    # A new ceremony (new key): the lead starts again.
    for f in (tmp_path / "public").glob(f"{MODE}.*"):
        f.unlink()
    for s in SITES:
        for f in paths[s].site_dir.glob(f"{MODE}.*"):
            f.unlink()
    done = shared_keygen(paths["a"], True, MODE, SITES)
    new_id = next(line.split("ceremony ")[1].split()[0] for line in done if "signed" in line)
    # Replaying ceremony 1's sealed key alone: not the file the lead signed this time.
    paths["b"].shared_sealed("b", MODE).write_bytes(old[f"{MODE}.sealed-b"])
    with pytest.raises(InvalidInput, match="replayed or altered"):
        shared_keygen(paths["b"], False, MODE)
    # Replaying all of ceremony 1 (validly signed, but old): refused by a site told the new id.
    for name, data in old.items():
        (tmp_path / "public" / name).write_bytes(data)
    with pytest.raises(InvalidInput, match=f"not {new_id}"):
        shared_keygen(paths["b"], False, MODE, ceremony_id=new_id)


def test_a_forged_lead_signature_is_refused(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    m = _mallory(tmp_path)
    shared_keygen(paths["a"], True, MODE, SITES)
    # The relay swaps in its own public key file and re-signs the manifest with its own key.
    mpath = ceremony.manifest_path(paths["b"], MODE)
    doc = json.loads(mpath.read_text())
    doc["public_sha256"] = "0" * 64
    forged = json.dumps(doc, indent=2, sort_keys=True).encode()
    mpath.write_bytes(forged)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    mallory_key = Ed25519PrivateKey.from_private_bytes((m.site_dir / "identity.ed25519").read_bytes())
    ceremony.signature_path(paths["b"], MODE).write_bytes(mallory_key.sign(forged))
    with pytest.raises(InvalidInput, match="not signed by a's confirmed key"):
        shared_keygen(paths["b"], False, MODE)
    ceremony.signature_path(paths["b"], MODE).unlink()  # no signature at all
    with pytest.raises(InvalidInput, match="not signed"):
        shared_keygen(paths["b"], False, MODE)
    assert not paths["b"].shared_secret(MODE).exists()


def test_a_site_refuses_a_key_shared_with_a_party_it_never_confirmed(tmp_path: Path) -> None:
    paths = _setup(tmp_path, ["a", "b", "c", "d"])
    # b never confirmed d (drop it from b's trust store); a and d did confirm each other.
    store = paths["b"].site_dir / "trusted-parties.json"
    trusted = json.loads(store.read_text())
    del trusted["d"]
    store.write_text(json.dumps(trusted))
    shared_keygen(paths["a"], True, MODE, ["a", "b", "c", "d"])
    with pytest.raises(InvalidInput, match="shared with d, whose fingerprint was not confirmed at b"):
        shared_keygen(paths["b"], False, MODE)
    assert any("unsealed" in line for line in shared_keygen(paths["c"], False, MODE))
