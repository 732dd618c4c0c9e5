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
    from medcloud.federated.keys import KeyPaths, threshold_keygen

    root = tmp_path_factory.mktemp("thr")
    parties = ["a", "b", "c"]
    paths = {s: KeyPaths(s, root / s, root / "public") for s in parties}
    for s in parties:  # the chain runs in the agreed order
        threshold_keygen(paths[s], parties)
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
