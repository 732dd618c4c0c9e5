from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medcloud.federated.he import HEError, NoSecretKey, PlaintextBackend
from medcloud.federated.he.security import check_128_bit


def test_plain_roundtrip_and_ops() -> None:
    be = PlaintextBackend(slots=7)
    a, b = np.arange(20.0), np.linspace(-1, 1, 20)
    ca, cb = be.encrypt(a), be.encrypt(b)
    assert len(ca.chunks) == 3
    out = be.decrypt(be.deserialize(be.serialize(be.mul_scalar(be.add(ca, cb), 0.5))))
    np.testing.assert_allclose(out, (a + b) / 2)


def test_ckks_chunked_vector_add_and_serialize(ckks_site: Any, ckks_aggregator: Any) -> None:
    rng = np.random.default_rng(0)
    n = ckks_site.slots * 2 + 17  # three chunks, the last partial
    a, b = rng.normal(size=n), rng.normal(size=n)
    blob_a = ckks_site.serialize(ckks_site.encrypt(a))
    blob_b = ckks_site.serialize(ckks_site.encrypt(b))
    # The aggregator adds ciphertexts it cannot read.
    summed = ckks_aggregator.serialize(
        ckks_aggregator.add(ckks_aggregator.deserialize(blob_a), ckks_aggregator.deserialize(blob_b))
    )
    out = ckks_site.decrypt(ckks_site.deserialize(summed))
    assert out.shape == (n,)
    assert np.max(np.abs(out - (a + b))) < 1e-6
    # 32 bytes per value on the compact parameter set: 8x float32.
    assert len(blob_a) / (3 * ckks_site.slots) < 33


def test_aggregator_context_cannot_decrypt(ckks_site: Any, ckks_aggregator: Any) -> None:
    ct = ckks_aggregator.deserialize(ckks_site.serialize(ckks_site.encrypt(np.ones(5))))
    assert not ckks_aggregator.can_decrypt
    with pytest.raises(NoSecretKey):
        ckks_aggregator.decrypt(ct)


def test_ckks_mul_scalar_needs_depth() -> None:
    pytest.importorskip("tenseal")
    from medcloud.federated.he.ckks import PRESETS, CkksBackend

    compact = CkksBackend.generate(PRESETS["compact"])
    with pytest.raises(HEError, match="depth"):
        compact.mul_scalar(compact.encrypt(np.ones(3)), 0.25)
    deep = CkksBackend.generate(PRESETS["depth1"])
    v = np.array([1.0, -2.0, 3.5])
    out = deep.decrypt(deep.mul_scalar(deep.encrypt(v), 0.25))
    assert np.max(np.abs(out - v * 0.25)) < 1e-6


def test_bad_bytes_and_mismatches(ckks_site: Any) -> None:
    blob = ckks_site.serialize(ckks_site.encrypt(np.ones(4)))
    with pytest.raises(HEError, match="magic"):
        ckks_site.deserialize(b"garbage")
    with pytest.raises(HEError, match="truncated"):
        ckks_site.deserialize(blob[:-10])
    with pytest.raises(HEError, match="backend"):
        PlaintextBackend().deserialize(blob)
    with pytest.raises(HEError, match="length"):
        ckks_site.add(ckks_site.encrypt(np.ones(4)), ckks_site.encrypt(np.ones(5)))
    with pytest.raises(HEError, match="NaN"):
        ckks_site.encrypt(np.array([1.0, np.nan]))


def test_security_table_refuses_weak_parameters() -> None:
    check_128_bit(8192, 120)
    with pytest.raises(HEError, match="128-bit"):
        check_128_bit(4096, 120)
    pytest.importorskip("tenseal")
    from medcloud.federated.he.ckks import CkksParams, generate_context

    with pytest.raises(HEError):
        generate_context(CkksParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 60)))
