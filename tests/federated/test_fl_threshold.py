"""Threshold (OpenFHE multiparty CKKS) tests: run under the CPython 3.10 venv (`make test-py310`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.py310,
    pytest.mark.skipif(
        sys.version_info[:2] != (3, 10),
        reason="OpenFHE's PyPI wheel imports only on CPython 3.10: run `make test-py310`",
    ),
]


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    pytest.importorskip("openfhe")
    from medcloud.federated.keys import KeyPaths, threshold_ceremony

    root = tmp_path_factory.mktemp("thr")
    parties = ["a", "b", "c"]
    paths = {s: KeyPaths(s, root / s, root / "public") for s in parties}
    threshold_ceremony([paths[s] for s in parties])  # identities, mutual trust, the chain in order
    return {"paths": paths, "public": root / "public", "parties": parties}


def test_joint_key_needs_every_share(ceremony: dict[str, object]) -> None:
    from medcloud.federated.he import HEError, NoSecretKey
    from medcloud.federated.keys import aggregator_backend, site_backend

    paths = ceremony["paths"]
    assert isinstance(paths, dict)
    agg = aggregator_backend("threshold", ceremony["public"])  # type: ignore[arg-type]
    sites = [site_backend("threshold", paths[s]) for s in ceremony["parties"]]  # type: ignore[attr-defined]
    rng = np.random.default_rng(3)
    n = agg.slots + 10
    vecs = [rng.normal(size=n) for _ in sites]
    summed = agg.sum([agg.deserialize(s.serialize(s.encrypt(v))) for s, v in zip(sites, vecs, strict=True)])
    with pytest.raises(NoSecretKey):
        agg.decrypt(summed)
    with pytest.raises(NoSecretKey):
        sites[0].decrypt(summed)  # one share alone cannot decrypt either
    shares = [s.partial_decrypt(summed) for s in sites]  # type: ignore[attr-defined]
    out = agg.fuse(shares)  # type: ignore[attr-defined]
    assert np.max(np.abs(out - sum(vecs))) < 1e-5
    with pytest.raises(HEError, match="all parties"):
        agg.fuse(shares[:2])  # type: ignore[attr-defined]
    with pytest.raises(NoSecretKey):
        agg.partial_decrypt(summed)  # type: ignore[attr-defined]
    # Secret shares live only in site folders.
    public_files = list(Path(str(ceremony["public"])).iterdir())
    for s in ceremony["parties"]:  # type: ignore[attr-defined]
        share = paths[s].threshold_share.read_bytes()
        assert all(share not in f.read_bytes() for f in public_files)


def test_threshold_fedavg_matches_plaintext(ceremony: dict[str, object]) -> None:
    from medcloud.federated.he import PlaintextBackend
    from medcloud.federated.keys import aggregator_backend, site_backend
    from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, decode_plain, run_fedavg

    paths = ceremony["paths"]
    assert isinstance(paths, dict)
    rng = np.random.default_rng(5)
    targets = {s: rng.normal(size=40) for s in ceremony["parties"]}  # type: ignore[attr-defined]
    counts = {"a": 10, "b": 30, "c": 60}

    def trainer(target: np.ndarray) -> object:
        return lambda w: w + 0.5 * (target - w)  # a contraction toward the site's optimum

    def sites(backend_for: object) -> list[FedAvgSite]:
        return [
            FedAvgSite(s, backend_for(s), trainer(targets[s]), counts[s])  # type: ignore[operator, arg-type]
            for s in ceremony["parties"]  # type: ignore[attr-defined]
        ]

    w0 = np.zeros(40)
    plain, _ = run_fedavg(FedAvgAggregator(PlaintextBackend()), sites(lambda s: PlaintextBackend()), w0, 10)
    enc, stats = run_fedavg(
        FedAvgAggregator(aggregator_backend("threshold", ceremony["public"])),  # type: ignore[arg-type]
        sites(lambda s: site_backend("threshold", paths[s])),
        w0,
        10,
    )
    assert np.max(np.abs(decode_plain(enc.payload) - decode_plain(plain.payload))) < 1e-5
    assert all(len(st.share_bytes) == 3 and min(st.share_bytes.values()) > 0 for st in stats)


def test_bytewise_sum_equals_openfhe_and_refuses_other_headers(ceremony: dict[str, object]) -> None:
    from medcloud.federated.he.base import frame, split_serialized
    from medcloud.federated.keys import aggregator_backend, site_backend

    paths = ceremony["paths"]
    assert isinstance(paths, dict)
    agg = aggregator_backend("threshold", ceremony["public"])  # type: ignore[arg-type]
    sites = [site_backend("threshold", paths[s]) for s in ceremony["parties"]]  # type: ignore[attr-defined]
    rng = np.random.default_rng(11)
    n = 2 * agg.slots + 5
    vecs = [rng.normal(size=n) for _ in sites]
    blobs = [s.serialize(s.encrypt(v)) for s, v in zip(sites, vecs, strict=True)]
    fast = agg.sum_serialized(blobs)
    layout = agg._layouts["threshold"]  # type: ignore[attr-defined]
    assert layout is not None and len(layout.windows) == 2  # the numpy path ran, not a fallback
    slow = agg.serialize(agg.sum([agg.deserialize(b) for b in blobs]))
    assert fast == slow  # byte for byte what OpenFHE's EvalAdd gives
    # A chunk whose header bytes differ (another level, scale or context) is never added bytewise.
    backend, length, chunks = split_serialized(agg._legacy(blobs[1]))  # type: ignore[attr-defined]
    odd = bytearray(chunks[1])
    odd[10] ^= 0xFF
    assert layout.add([blobs[0], frame(backend, length, [chunks[0], bytes(odd), *chunks[2:]])]) is None
    # Fusion adds the partial decryptions the same way and still decodes the exact sum.
    shares = [s.partial_decrypt(agg.deserialize(fast)) for s in sites]  # type: ignore[attr-defined]
    out = agg.fuse(shares)  # type: ignore[attr-defined]
    assert agg._layouts["threshold-share"] is not None  # type: ignore[attr-defined]
    assert np.max(np.abs(out - sum(vecs))) < 1e-5


def test_packed_wire_format_sizes_and_corruption(ceremony: dict[str, object]) -> None:
    from medcloud.federated.he import HEError
    from medcloud.federated.he.base import frame, split_header
    from medcloud.federated.keys import aggregator_backend, site_backend

    paths = ceremony["paths"]
    assert isinstance(paths, dict)
    agg = aggregator_backend("threshold", ceremony["public"])  # type: ignore[arg-type]
    sites = [site_backend("threshold", paths[s]) for s in ceremony["parties"]]  # type: ignore[attr-defined]
    rng = np.random.default_rng(12)
    n = 3 * agg.slots
    vecs = [rng.normal(size=n) for _ in sites]
    blobs = [s.serialize(s.encrypt(v)) for s, v in zip(sites, vecs, strict=True)]
    head, _ = split_header(blobs[0])
    assert head["format"] == "openfhe-rns-packed" and head["chunks"] == 3
    # Two polynomials at q's 60 bits per slot pair: 30 bytes per value, plus one header per vector.
    legacy = agg._legacy(blobs[0])  # type: ignore[attr-defined]
    assert len(blobs[0]) / n < 30.2 < len(legacy) / n
    summed = agg.sum_serialized(blobs)
    assert len(summed) / n < 30.2
    shares = [s.partial_decrypt(agg.deserialize(summed)) for s in sites]  # type: ignore[attr-defined]
    assert len(shares[0]) / n < 15.2
    assert np.max(np.abs(agg.fuse(shares) - sum(vecs))) < 1e-5  # type: ignore[attr-defined]
    # The packed frame rebuilds OpenFHE's bytes exactly.
    assert agg._legacy(agg.serialize(agg.deserialize(blobs[0]))) == legacy  # type: ignore[attr-defined]
    head, parts = split_header(blobs[0])
    backend, length = head.pop("backend"), head.pop("length")
    head.pop("sizes")
    bad = {
        "version": ({**head, "version": 9}, parts),
        "q": ({**head, "q": head["q"] + 2**20}, parts),
        "N": ({**head, "N": 4096}, parts),
        "windows": ({**head, "windows": [0, 8]}, parts),
        "header bytes": (head, [parts[0][:-1], parts[1]]),
        "coefficients": (head, [parts[0], parts[1][:-1]]),
        "residue >= q": (head, [parts[0], b"\xff" * len(parts[1])]),
    }
    for what, (h, p) in bad.items():
        with pytest.raises(HEError):
            agg.deserialize(frame(backend, length, p, h))
        assert what


# --- t-of-N: Shamir-shared key shares, recovery of a site that dropped out -----------------------


@pytest.fixture(scope="module")
def ceremony_2of3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    pytest.importorskip("openfhe")
    from medcloud.federated.keys import KeyPaths, confirm_each_other, threshold_keygen

    root = tmp_path_factory.mktemp("thr2of3")
    parties = ["a", "b", "c"]
    paths = {s: KeyPaths(s, root / s, root / "public") for s in parties}
    confirm_each_other([paths[s] for s in parties])  # identities published, fingerprints confirmed
    first = {s: threshold_keygen(paths[s], parties, threshold=2) for s in parties}  # in chain order
    assert "waiting for the whole signed chain (up to c) to seal the key shares" in first["a"]  # c not there yet
    assert "joint public key published" in first["c"] and "chain link signed" in first["c"]
    assert "key share split 2-of-3; shares sealed for a, b" in first["c"]  # the whole chain was there
    again = {s: threshold_keygen(paths[s], parties) for s in parties}  # t comes from what a published
    assert "key share split 2-of-3; shares sealed for b, c" in again["a"]
    assert "key share split 2-of-3; shares sealed for a, c" in first["b"] + again["b"]
    assert threshold_keygen(paths["b"], parties)[-1] == "key shares already sealed"
    return {"paths": paths, "public": root / "public", "parties": parties}


def _encrypted_sum(agg: object, sites: list[object], seed: int) -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = agg.slots + 7  # type: ignore[attr-defined]
    vecs = [rng.normal(size=n) for _ in sites]
    blobs = [s.serialize(s.encrypt(v)) for s, v in zip(sites, vecs, strict=True)]  # type: ignore[attr-defined]
    return agg.deserialize(agg.sum_serialized(blobs)), sum(vecs)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("missing", "recoverer", "helper"), [("a", "b", "c"), ("c", "a", "b")])
def test_t_of_n_survivors_recover_a_dropped_site(
    ceremony_2of3: dict[str, object], missing: str, recoverer: str, helper: str
) -> None:
    from medcloud.federated.he import HEError
    from medcloud.federated.keys import (
        aggregator_backend,
        recovered_backend,
        site_backend,
        threshold_recover,
        threshold_release,
    )

    paths = ceremony_2of3["paths"]
    assert isinstance(paths, dict)
    agg = aggregator_backend("threshold", ceremony_2of3["public"])  # type: ignore[arg-type]
    survivors = [site_backend("threshold", paths[s]) for s in (recoverer, helper)]
    summed, expected = _encrypted_sum(agg, survivors, seed=21)
    partials = [s.partial_decrypt(summed) for s in survivors]  # type: ignore[attr-defined]
    with pytest.raises(HEError, match="all parties"):
        agg.fuse(partials)  # type: ignore[attr-defined]  # the dropped site's partial is missing
    # The missing site is gone: the helper re-seals its share of the missing key to the recoverer,
    # which adds its own share (t = 2) and rebuilds the missing key share in its secret folder.
    assert threshold_release(paths[helper], missing, recoverer) == [f"share of {missing}'s key sealed for {recoverer}"]
    assert threshold_recover(paths[recoverer], missing) == [f"{missing}'s key share recovered from 2 shares (2-of-3)"]
    assert paths[recoverer].threshold_recovered(missing).stat().st_mode & 0o077 == 0
    stand_in = recovered_backend(paths[recoverer], missing)
    out = agg.fuse([*partials, stand_in.partial_decrypt(summed)])  # type: ignore[attr-defined]
    assert np.max(np.abs(out - expected)) < 1e-5


def test_t_of_n_fewer_than_t_shares_cannot_decrypt(ceremony_2of3: dict[str, object]) -> None:
    from medcloud.federated.he import HEError
    from medcloud.federated.he import threshold as thr
    from medcloud.federated.keys import _own_share_of, aggregator_backend, site_backend, threshold_recover

    paths = ceremony_2of3["paths"]
    parties = ceremony_2of3["parties"]
    assert isinstance(paths, dict) and isinstance(parties, list)
    # c alone (b released nothing to c) holds 1 share of a's key: refused, nothing written.
    assert not (ceremony_2of3["public"] / "threshold.release-a-from-b-to-c.sealed").exists()  # type: ignore[operator]
    with pytest.raises(HEError, match="1 key share\\(s\\) of party 1: recovery needs 2 of 3"):
        threshold_recover(paths["c"], "a")
    assert not paths["c"].threshold_recovered("a").exists()
    # One genuine share plus a share of some other key (what a coalition below t could guess):
    # OpenFHE interpolates, but the key is wrong, and its partial decryption fuses to nothing.
    context = paths["a"].threshold_context.read_bytes()
    genuine = _own_share_of(paths["c"], parties, "a")
    _, other_sk = thr.keygen_share(context, None)
    forged = thr.share_key(context, other_sk, 3, 2, 1)[2]  # "a's key, held by b", from another key
    wrong = thr.recover_key(context, [genuine, forged])
    agg = aggregator_backend("threshold", ceremony_2of3["public"])  # type: ignore[arg-type]
    survivors = [site_backend("threshold", paths[s]) for s in ("b", "c")]
    summed, expected = _encrypted_sum(agg, survivors, seed=22)
    bad = thr.ThresholdBackend(context, paths["a"].threshold_joint.read_bytes(), wrong, lead=True)
    partials = [s.partial_decrypt(summed) for s in survivors]  # type: ignore[attr-defined]
    try:
        out = agg.fuse([*partials, bad.partial_decrypt(summed)])  # type: ignore[attr-defined]
    except HEError:
        pass  # OpenFHE's decoder refused the noise (REAL mode checks the imaginary parts)
    else:
        assert np.max(np.abs(out - expected)) > 1.0  # garbage, never the sum
    with pytest.raises(HEError, match="distinct holders"):
        thr.recover_key(context, [genuine, genuine])


def test_t_of_n_shares_travel_sealed_and_aggregator_holds_no_secret(ceremony_2of3: dict[str, object]) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from medcloud.errors import InvalidInput
    from medcloud.federated.he import HEError, NoSecretKey
    from medcloud.federated.he import threshold as thr
    from medcloud.federated.keys import _keyshare_aad, _own_share_of, aggregator_backend, ensure_identity, unseal

    paths = ceremony_2of3["paths"]
    parties = ceremony_2of3["parties"]
    public = Path(str(ceremony_2of3["public"]))
    assert isinstance(paths, dict) and isinstance(parties, list)
    sealed = sorted(public.glob("threshold.keyshare-*.sealed"))
    assert [p.name for p in sealed] == [
        f"threshold.keyshare-{o}-for-{h}.sealed" for o in "abc" for h in "abc" if h != o
    ]
    sizes = {p.stat().st_size for p in sealed}
    assert max(sizes) < 70_000  # one 8,192-coefficient polynomial in an OpenFHE envelope, + 60 bytes of seal
    public_bytes = [f.read_bytes() for f in public.iterdir()]
    secrets = []
    for s in parties:
        secrets.append(paths[s].threshold_share.read_bytes())
        secrets.append(paths[s].identity_key.read_bytes())
        for o in parties:
            if o != s:
                secrets.append(_own_share_of(paths[s], parties, o))  # what the sealed blob carries
    for secret in secrets:  # neither whole nor its last 4 KiB (coefficients) is anywhere in public
        assert all(secret not in b and secret[-4096:] not in b for b in public_bytes)
    # Nothing public parses as a key share, and no key but the holder's opens a sealed one.
    blob = paths["a"].threshold_sealed_share("a", "b").read_bytes()
    with pytest.raises(HEError):
        thr.key_share_meta(blob)
    aad = _keyshare_aad("a", "b", 2, parties)
    for key in (X25519PrivateKey.generate(), ensure_identity(paths["c"]), ensure_identity(paths["a"])):
        with pytest.raises(InvalidInput, match="not for this site"):
            unseal(key, blob, aad)
    assert thr.key_share_meta(unseal(ensure_identity(paths["b"]), blob, aad)) == {"of": 1, "holder": 2, "N": 3, "t": 2}
    with pytest.raises(InvalidInput):  # relabelled (another recipient in the AAD): refused too
        unseal(ensure_identity(paths["b"]), blob, _keyshare_aad("a", "c", 2, parties))
    # The aggregator, built from the public folder, holds no share and cannot decrypt.
    agg = aggregator_backend("threshold", public)
    assert not agg.can_decrypt and not agg.holds_share  # type: ignore[attr-defined]
    with pytest.raises(NoSecretKey):
        agg.partial_decrypt(agg.encrypt(np.ones(3)))  # type: ignore[attr-defined]


def test_t_of_n_parameters_checked() -> None:
    pytest.importorskip("openfhe")
    from medcloud.errors import InvalidInput
    from medcloud.federated.he import HEError
    from medcloud.federated.he.threshold import check_threshold
    from medcloud.federated.keys import KeyPaths, threshold_keygen

    for n, t in [(3, 2), (3, 3), (4, 3), (5, 3), (5, 4), (2, 2)]:
        check_threshold(n, t)
    for n, t in [(4, 2), (3, 1), (2, 1), (5, 2), (3, 4), (3, 0)]:
        with pytest.raises(HEError, match="N/2 < t <= N - 1"):
            check_threshold(n, t)
    with pytest.raises(InvalidInput, match="honest majority"):
        threshold_keygen(KeyPaths("a", Path("/nonexistent/a"), Path("/nonexistent/p")), ["a", "b", "c", "d"], 2)


def test_aggregator_sum_refuses_a_corrupt_upload(ceremony: dict[str, object]) -> None:
    """A frame the fast numpy sum does not recognise falls back to OpenFHE objects, and a corrupt
    one is refused with HEError there (not a TypeError from the fallback itself)."""
    from medcloud.federated.he import HEError
    from medcloud.federated.keys import aggregator_backend, site_backend

    paths = ceremony["paths"]
    assert isinstance(paths, dict)
    agg = aggregator_backend("threshold", ceremony["public"])  # type: ignore[arg-type]
    site = site_backend("threshold", paths["a"])
    good = site.serialize(site.encrypt(np.ones(8)))
    bad = good[:-40] + bytes(40)  # same frame, garbage in the last residues
    with pytest.raises(HEError):
        agg.sum_serialized([good, bad])


def test_t_of_n_release_forged_by_the_relay_is_refused(ceremony_2of3: dict[str, object]) -> None:
    """The relay seals a key share of its own to the recoverer, in a helper's name: the recoverer
    refuses it (the helper did not sign it), and nothing is rebuilt."""
    from medcloud.errors import InvalidInput
    from medcloud.federated.he import threshold as thr
    from medcloud.federated.keys import _release_aad, seal

    paths = ceremony_2of3["paths"]
    parties = ceremony_2of3["parties"]
    assert isinstance(paths, dict) and isinstance(parties, list)
    context = paths["a"].threshold_context.read_bytes()
    _, relay_sk = thr.keygen_share(context, None)
    forged_share = thr.share_key(context, relay_sk, 3, 2, 3)[2]  # "c's key, held by b", from the relay's key
    release = paths["a"].threshold_release("c", "b", "a")
    kept = {p: p.read_bytes() for p in (release, release.with_name(release.name + ".sig")) if p.is_file()}
    try:
        recipient = paths["a"].identity_pub("a").read_bytes()
        release.write_bytes(seal(recipient, forged_share, _release_aad("c", "b", "a", 2, parties)))
        with pytest.raises(InvalidInput, match="the share of c's key released by b is not signed by b's confirmed key"):
            from medcloud.federated.keys import threshold_recover

            threshold_recover(paths["a"], "c")
    finally:
        for p in (release, release.with_name(release.name + ".sig")):
            p.unlink(missing_ok=True)
        for p, data in kept.items():
            p.write_bytes(data)
