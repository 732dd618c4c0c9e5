"""The signed threshold key chain: a relay that substitutes a link is refused at the site.

Run under the CPython 3.10 venv (`make test-py310`): OpenFHE's wheel imports only there.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [
    pytest.mark.py310,
    pytest.mark.skipif(
        sys.version_info[:2] != (3, 10),
        reason="OpenFHE's PyPI wheel imports only on CPython 3.10: run `make test-py310`",
    ),
]

PARTIES = ["a", "b", "c"]


def _paths(root: Path) -> dict[str, Any]:
    from medcloud.federated.keys import KeyPaths

    return {s: KeyPaths(s, root / s, root / "public") for s in PARTIES}


@pytest.fixture(scope="module")
def half_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a and b have built and signed their links; c (the last) has not yet."""
    pytest.importorskip("openfhe")
    from medcloud.federated.keys import confirm_each_other, threshold_keygen

    root = tmp_path_factory.mktemp("signed")
    paths = _paths(root)
    confirm_each_other(list(paths.values()))
    assert "chain link signed" in threshold_keygen(paths["a"], PARTIES)
    assert "chain link signed" in threshold_keygen(paths["b"], PARTIES)
    return root


@pytest.fixture
def copy(half_chain: Path, tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "fed"
    shutil.copytree(half_chain, root)
    return _paths(root)


def _relay_pk(paths: Any, built_on: bytes | None) -> bytes:
    """A public key the relay makes itself (it keeps the secret share): what a substitution inserts."""
    from medcloud.federated.he import threshold as thr

    pk, _ = thr.keygen_share(paths.threshold_context.read_bytes(), built_on)
    return bytes(pk)


def test_honest_signed_chain_encrypts_and_decrypts(copy: dict[str, Any]) -> None:
    from medcloud.federated.keys import aggregator_backend, site_backend, threshold_keygen

    done = threshold_keygen(copy["c"], PARTIES)
    assert "joint public key published" in done and "chain link signed" in done
    public = copy["a"].public_dir
    assert sorted(p.name for p in public.glob("threshold.link-*")) == [
        f"threshold.link-{s}.{ext}" for s in PARTIES for ext in ("json", "sig")
    ]
    agg = aggregator_backend("threshold", public)
    sites = [site_backend("threshold", copy[s]) for s in PARTIES]
    vecs = [np.full(5, float(i + 1)) for i in range(3)]
    summed = agg.sum([agg.deserialize(s.serialize(s.encrypt(v))) for s, v in zip(sites, vecs, strict=True)])
    out = agg.fuse([s.partial_decrypt(summed) for s in sites])  # type: ignore[attr-defined]
    assert np.max(np.abs(out[:5] - 6.0)) < 1e-5


def _refused(copy: dict[str, Any], tamper: Callable[[dict[str, Any]], None], match: str) -> None:
    from medcloud.errors import InvalidInput
    from medcloud.federated.keys import threshold_keygen

    tamper(copy)
    with pytest.raises(InvalidInput, match=match):
        threshold_keygen(copy["c"], PARTIES)
    assert not copy["c"].threshold_share.exists() and not copy["c"].threshold_joint.exists()  # nothing built


def test_substituted_previous_public_key_is_refused(copy: dict[str, Any]) -> None:
    def swap(p: dict[str, Any]) -> None:  # the relay's own key, built on a's: its secret would be in the chain
        pk0 = p["a"].threshold_pk(0).read_bytes()
        p["a"].threshold_pk(1).write_bytes(_relay_pk(p["a"], pk0))

    _refused(copy, swap, "the relayed public key of b is not the one b signed")


def test_substituted_context_is_refused(copy: dict[str, Any]) -> None:
    def swap(p: dict[str, Any]) -> None:  # other parameters (the context holds no randomness of its own)
        data = p["a"].threshold_context.read_bytes()
        p["a"].threshold_context.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))

    _refused(copy, swap, "the relayed threshold crypto context is not the one a signed")


def test_substituted_party_list_is_refused(copy: dict[str, Any]) -> None:
    _refused(
        copy,
        lambda p: p["a"].threshold_parties.write_bytes(json.dumps(["a", "b", "c", "mallory"]).encode()),
        "the relayed threshold party list is not the a,b,c agreed at c",
    )


def test_substituted_threshold_is_refused(copy: dict[str, Any]) -> None:
    # An N-of-N chain the relay relabels 2-of-3 (so that two shares would open it): a signed t=3.
    doc = {"parties": PARTIES, "threshold": 2}
    _refused(
        copy,
        lambda p: p["a"].threshold_t.write_bytes(json.dumps(doc).encode()),
        "a signed a chain for parties .* with t=3, not the a,b,c with t=2",
    )


def test_forged_link_signature_is_refused(copy: dict[str, Any]) -> None:
    from medcloud.federated import ceremony, threshold_chain
    from medcloud.federated.keys import KeyPaths

    def forge(p: dict[str, Any]) -> None:
        # The relay puts its own key in b's place and signs a link for it with a key of its own.
        mallory = KeyPaths("b", p["a"].site_dir.parent / "mallory", p["a"].public_dir)
        real_pub = ceremony.signing_pub_path(p["a"], "b").read_bytes()
        signer = ceremony.ensure_signing(mallory)  # overwrites identity-b.ed25519.pub ...
        ceremony.signing_pub_path(p["a"], "b").write_bytes(real_pub)  # ... put back: c confirmed that one
        p["a"].threshold_pk(1).write_bytes(_relay_pk(p["a"], p["a"].threshold_pk(0).read_bytes()))
        threshold_chain.sign_link(mallory, signer, PARTIES, 3)

    _refused(copy, forge, "the threshold key link of b is not signed by b's confirmed key")


def test_unconfirmed_or_substituted_party_is_refused(copy: dict[str, Any]) -> None:
    from medcloud.errors import InvalidInput
    from medcloud.federated import ceremony
    from medcloud.federated.keys import threshold_keygen

    trust_file = copy["c"].site_dir / "trusted-parties.json"
    confirmed = json.loads(trust_file.read_text())
    trust_file.write_text(json.dumps({k: v for k, v in confirmed.items() if k != "a"}))
    with pytest.raises(InvalidInput, match="a's fingerprint has not been confirmed at c"):
        threshold_keygen(copy["c"], PARTIES)
    trust_file.write_text(json.dumps(confirmed))
    # The relay swaps b's signing identity for its own: c confirmed another fingerprint.
    other = copy["a"].site_dir.parent / "other"
    from medcloud.federated.keys import KeyPaths

    ceremony.ensure_signing(KeyPaths("b", other, copy["a"].public_dir))
    with pytest.raises(InvalidInput, match="identity published for b does not match the fingerprint confirmed at c"):
        threshold_keygen(copy["c"], PARTIES)
    assert not copy["c"].threshold_share.exists()


def test_substituted_joint_key_is_refused_before_encrypting(copy: dict[str, Any]) -> None:
    from medcloud.errors import InvalidInput
    from medcloud.federated.keys import aggregator_backend, site_backend, threshold_keygen

    threshold_keygen(copy["c"], PARTIES)
    site_backend("threshold", copy["a"])  # honest: accepted
    joint = copy["a"].threshold_joint
    joint.write_bytes(_relay_pk(copy["a"], None))  # a key whose secret only the relay holds
    for s in PARTIES:  # no site encrypts to it or makes a partial decryption under it
        with pytest.raises(InvalidInput, match="the relayed joint public key is not the one c signed"):
            site_backend("threshold", copy[s])
    with pytest.raises(InvalidInput, match="joint public key is not the one c signed"):
        aggregator_backend("threshold", copy["a"].public_dir)
