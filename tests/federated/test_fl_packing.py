"""Packed, seeded CKKS ciphertexts: sizes, round trips, corrupt bytes, precision over many rounds."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest

from medcloud.federated.he import HEError
from medcloud.federated.he.base import frame, split_header
from medcloud.federated.he.packing import expand_seed, pack_bits, packed_size, unpack_bits


@pytest.mark.parametrize("bits", [1, 7, 50, 52, 60, 63, 64])
def test_pack_bits_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2**bits if bits < 64 else 2**63, size=1001, dtype=np.uint64)
    data = pack_bits(values, bits)
    assert len(data) == packed_size(values.size, bits) == (values.size * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(data, values.size, bits), values)
    with pytest.raises(HEError, match="bytes"):
        unpack_bits(data[:-1], values.size, bits)
    if bits < 64:
        with pytest.raises(HEError, match="fit"):
            pack_bits(np.array([2**bits], dtype=np.uint64), bits)


def test_seed_expansion_is_deterministic_uniform_and_rejects() -> None:
    seed = bytes(range(32))
    q = 2**59 + 21  # 60-bit mask: about half the raw draws are >= q, so rejection runs
    a = expand_seed(seed, 5000, q)
    np.testing.assert_array_equal(a, expand_seed(seed, 5000, q))
    assert int(a.max()) < q and a.min() >= 0
    assert 0.45 < float(np.mean(a.astype(np.float64) / q)) < 0.55
    assert not np.array_equal(a, expand_seed(bytes(32), 5000, q))
    assert not np.array_equal(a, expand_seed(seed, 5000, q, stream_id=1))
    with pytest.raises(HEError):
        expand_seed(b"short", 10, q)


def test_seeded_upload_is_half_of_explicit_and_sums(ckks_site: Any, ckks_aggregator: Any) -> None:
    assert ckks_site.packed and ckks_aggregator.packed
    rng = np.random.default_rng(1)
    n = 3 * ckks_site.slots - 5
    vecs = [rng.normal(size=n) for _ in range(5)]
    uploads = [ckks_site.serialize(ckks_site.encrypt(v)) for v in vecs]
    # Seeded (site, secret key): c0 packed at 60 bits plus one seed; N = 8192 real values per
    # ciphertext (real and imaginary parts of the 4,096 slots): ~7.5 bytes per value.
    assert ckks_site.slots == 8192
    per_value = len(uploads[0]) / (3 * ckks_site.slots)
    assert 7.5 <= per_value < 7.55
    # Public-key encryption (aggregator) has to carry c1: twice the size.
    explicit = ckks_aggregator.serialize(ckks_aggregator.encrypt(vecs[0]))
    assert 1.95 < len(explicit) / len(uploads[0]) < 2.0
    np.testing.assert_allclose(ckks_site.decrypt(ckks_site.deserialize(explicit)), vecs[0], atol=1e-7)
    # The aggregator's sum keeps the seeds: the download is as small as one upload plus 32 bytes a site.
    summed = ckks_aggregator.sum_serialized(uploads)
    assert len(summed) - len(uploads[0]) < 4 * 32 + 64
    head, _ = split_header(summed)
    assert head["seeds"] == 5 and head["c1"] is False
    out = ckks_site.decrypt(ckks_site.deserialize(summed))
    assert np.max(np.abs(out - sum(vecs))) < 1e-6
    # Seeds from the uploads reappear, but no plaintext does: c0 differs from any upload's c0.
    assert all(up[-32:] in summed for up in uploads)


def test_many_seeds_fold_into_explicit_c1(ckks_site: Any, ckks_aggregator: Any) -> None:
    from medcloud.federated.he.ckks import MAX_SEEDS

    v = np.linspace(-1, 1, 100)
    total = ckks_aggregator.deserialize(ckks_site.serialize(ckks_site.encrypt(v)))
    for _ in range(MAX_SEEDS + 2):
        total = ckks_aggregator.add(total, ckks_aggregator.deserialize(ckks_site.serialize(ckks_site.encrypt(v))))
    blob = ckks_aggregator.serialize(total)
    head, _ = split_header(blob)
    assert head["c1"] is True and head["seeds"] <= MAX_SEEDS
    out = ckks_site.decrypt(ckks_site.deserialize(blob))
    assert np.max(np.abs(out - (MAX_SEEDS + 3) * v)) < 1e-6


def _reframe(blob: bytes, **changes: Any) -> bytes:
    head, blobs = split_header(blob)
    for key, value in changes.items():
        if key == "blobs":
            blobs = value
        else:
            head[key] = value
    backend, length = head.pop("backend"), head.pop("length")
    head.pop("sizes")
    return frame(backend, length, blobs, head)


def test_corrupt_packed_bytes_are_refused(ckks_site: Any) -> None:
    blob = ckks_site.serialize(ckks_site.encrypt(np.ones(10)))
    assert ckks_site.decrypt(ckks_site.deserialize(_reframe(blob)))[0] == pytest.approx(1.0, abs=1e-6)
    head, blobs = split_header(blob)
    cases = {
        "version": _reframe(blob, version=1),
        "newer version": _reframe(blob, version=3),
        "values per chunk": _reframe(blob, values_per_chunk=4096),
        "format": _reframe(blob, format="tenseal"),
        "parameters": _reframe(blob, q=head["q"] - 2),
        "chunks": _reframe(blob, chunks=2),
        "seed": _reframe(blob, blobs=[blobs[0], blobs[1], blobs[2][:-1]]),
        "bytes": _reframe(blob, blobs=[blobs[0][:-3], blobs[1], blobs[2]]),
        "below q": _reframe(blob, blobs=[b"\xff" * len(blobs[0]), blobs[1], blobs[2]]),
        "no c1": _reframe(blob, seeds=0, blobs=[blobs[0], blobs[1], b""]),
        "header": blob[:12] + b"{" + blob[13:],
        "truncated": blob[:-1],
    }
    for what, bad in cases.items():
        with pytest.raises(HEError):  # each case raises HEError, not a library crash
            ckks_site.deserialize(bad)
            pytest.fail(f"accepted a ciphertext with a bad {what}")


def test_packed_precision_after_30_rounds(breast_cancer_sites: Any, ckks_site: Any, ckks_aggregator: Any) -> None:
    from medcloud.federated import tabular
    from medcloud.federated.he import PlaintextBackend
    from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, decode_plain, run_fedavg

    def sites(be: Any) -> list[FedAvgSite]:
        return [FedAvgSite(s.name, be, partial(tabular.local_train, site=s), s.n_train) for s in breast_cancer_sites]

    w0 = np.zeros(tabular.n_params())
    plain, _ = run_fedavg(FedAvgAggregator(PlaintextBackend()), sites(PlaintextBackend()), w0, 30)
    enc, stats = run_fedavg(FedAvgAggregator(ckks_aggregator), sites(ckks_site), w0, 30)
    w_enc = ckks_site.decrypt(ckks_site.deserialize(enc.payload)) / enc.total_weight
    assert np.max(np.abs(w_enc - decode_plain(plain.payload))) < 1e-5
    # Every upload and every download travelled seeded: one 8,192-value chunk at ~7.5 bytes per
    # value (TenSEAL's format: 32 bytes per 4,096-slot value, two chunks' worth here: 262 KB).
    chunk = ckks_site.slots
    assert max(max(s.bytes_up.values()) for s in stats) < 7.6 * chunk
    assert max(max(s.bytes_down.values()) for s in stats[1:]) < 7.6 * chunk


def test_expand_sum_equals_term_by_term_sum() -> None:
    from medcloud.federated.he.packing import add_mod, expand_sum

    q = 2**60 - 93  # a 60-bit odd modulus
    seeds = [bytes([i]) * 32 for i in range(20)]  # more than one reduction batch
    start = np.stack([expand_seed(bytes(32), 777, q, i) for i in range(3)])
    ref = start.copy()
    for seed in seeds:
        ref = add_mod(ref, np.stack([expand_seed(seed, 777, q, i) for i in range(3)]), q)
    np.testing.assert_array_equal(expand_sum(seeds, 3, 777, q, start), ref)
    np.testing.assert_array_equal(start[0], expand_seed(bytes(32), 777, q))  # start left untouched
    # Chunks expand independently: a range starting at chunk 1 equals rows 1.. of the whole.
    np.testing.assert_array_equal(expand_sum(seeds, 2, 777, q, start[1:], first=1), ref[1:])


def test_worker_processes_give_the_same_ciphertexts(ckks_contexts: tuple[bytes, bytes], ckks_site: Any) -> None:
    from medcloud.federated.he.ckks import CkksBackend

    multi = CkksBackend(ckks_contexts[0], workers=2)
    v = np.random.default_rng(4).normal(size=5 * multi.slots + 3)
    blob = multi.serialize(multi.encrypt(v))  # two processes, chunk ranges 0-2 and 3-5
    assert np.max(np.abs(ckks_site.decrypt(ckks_site.deserialize(blob)) - v)) < 1e-6
    summed = ckks_site.serialize(ckks_site.add(ckks_site.deserialize(blob), ckks_site.encrypt(v)))
    assert np.max(np.abs(multi.decrypt(multi.deserialize(summed)) - 2 * v)) < 1e-6
    assert CkksBackend(ckks_contexts[1], workers=2)._workers == 1  # the aggregator has nothing to spread
