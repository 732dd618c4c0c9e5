"""The aes backend refuses instead of wrapping, and its errors carry no secret-derived value.

Regression tests for the issue's findings (1,100 uploads of 2^21-1 decrypted to -1.99e9; E(2^20)*2^12
decrypted to 0; an int64 minimum passed the range check; error text named the offending value), plus
property tests of the arithmetic against exact integer arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("hypothesis")  # a dev dependency; absent from the CPython 3.10 OpenFHE venv

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcloud.federated.he import HEError
from medcloud.federated.he.aes import INT64_MAX, MAX_LENGTH, SPEC, AesCtrBackend, AesParams, generate_key
from medcloud.federated.he.base import frame, split_header

LIMIT = 2.0**21  # default range: |x| < 2^(63 - 32 - 10)


def test_sum_beyond_headroom_is_refused_not_wrapped(aes_site: AesCtrBackend, aes_aggregator: AesCtrBackend) -> None:
    top = np.full(4, LIMIT - 1)
    blob = aes_site.serialize(aes_site.encrypt(top))
    # 1,024 fresh uploads of the largest value still decrypt exactly ...
    ok = aes_aggregator.sum_serialized([blob] * 1024)
    np.testing.assert_array_equal(aes_site.decrypt(aes_site.deserialize(ok)), 1024 * top)
    # ... one more could wrap, so the aggregator's sum refuses (the issue: 1,100 gave -1.99e9).
    with pytest.raises(HEError, match="could overflow"):
        aes_aggregator.sum_serialized([blob] * 1100)
    # Summing partial sums is held to the same bound.
    with pytest.raises(HEError, match="could overflow"):
        aes_aggregator.add(aes_aggregator.deserialize(ok), aes_aggregator.deserialize(blob))


def test_integer_scalar_that_would_wrap_is_refused(aes_site: AesCtrBackend, aes_aggregator: AesCtrBackend) -> None:
    ct = aes_aggregator.deserialize(aes_site.serialize(aes_site.encrypt(np.array([2.0**20]))))
    with pytest.raises(HEError, match="would leave"):
        aes_aggregator.mul_scalar(ct, 2**12)  # the issue: E(2^20)*2^12 decrypted to 0
    np.testing.assert_array_equal(aes_site.decrypt(aes_aggregator.mul_scalar(ct, 2**10)), [2.0**30])
    np.testing.assert_array_equal(aes_site.decrypt(aes_aggregator.mul_scalar(ct, -(2**10))), [-(2.0**30)])


@pytest.mark.parametrize(
    "values",
    [
        np.array([np.iinfo(np.int64).min, 0], dtype=np.int64),  # passed the old integer check
        np.array([np.iinfo(np.int64).max], dtype=np.int64),
        np.array([np.iinfo(np.uint64).max], dtype=np.uint64),
        np.array([LIMIT]),
        np.array([-LIMIT]),
        np.array([1e300]),
    ],
)
def test_range_is_checked_in_floating_point(aes_site: AesCtrBackend, values: Any) -> None:
    with pytest.raises(HEError, match="out of the aes backend's range"):
        aes_site.encrypt(values)


def test_error_text_carries_no_value(aes_site: AesCtrBackend) -> None:
    secret_value = 12345678.9
    with pytest.raises(HEError) as info:
        aes_site.encrypt(np.array([1.0, secret_value]))
    text = str(info.value)
    assert "12345678" not in text and "1.235e+07" not in text and "1.2346e+07" not in text


def _reframed(data: bytes, **changes: Any) -> bytes:
    """The same ciphertext with header fields changed (as a tampering aggregator would)."""
    header, blobs = split_header(data)
    h = {**header, **changes}
    extra = {k: v for k, v in h.items() if k not in ("backend", "length", "sizes")}
    return frame(h["backend"], h["length"], blobs, extra)


def test_length_limit_below_pad_reuse(aes_site: AesCtrBackend, aes_aggregator: AesCtrBackend) -> None:
    assert MAX_LENGTH <= 2**32  # one nonce's 32-bit block counter pads 2^33 words
    blob = aes_site.serialize(aes_site.encrypt(np.ones(2)))
    for length in (MAX_LENGTH + 1, 0):
        with pytest.raises(HEError):
            aes_aggregator.deserialize(_reframed(blob, length=length))


def test_a_bound_that_hides_its_terms_is_refused(aes_site: AesCtrBackend, aes_aggregator: AesCtrBackend) -> None:
    """An aggregator that understates the bound to get a wrapped sum decrypted is caught by the key holder."""
    blob = aes_aggregator.sum_serialized([aes_site.serialize(aes_site.encrypt(np.ones(3)))] * 4)
    header, _ = split_header(blob)
    assert header["bound"] == 4 * AesParams().fresh_bound
    for bound in (header["bound"] - 1, 0, INT64_MAX + 1, -5, "1"):
        with pytest.raises(HEError):
            aes_site.deserialize(_reframed(blob, bound=bound))


small = st.floats(min_value=-(2.0**20), max_value=2.0**20, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.lists(small, min_size=3, max_size=3), min_size=1, max_size=12),
    scalar=st.integers(min_value=-64, max_value=64),
)
def test_sums_and_integer_scalars_match_exact_arithmetic(
    aes_site: AesCtrBackend, aes_aggregator: AesCtrBackend, rows: list[list[float]], scalar: int
) -> None:
    vs = [np.array(r) for r in rows]
    summed = aes_aggregator.deserialize(
        aes_aggregator.sum_serialized([aes_site.serialize(aes_site.encrypt(v)) for v in vs])
    )
    f = 2**32
    # The fixed-point values, added exactly in Python integers; decryption returns them as float64,
    # so the comparison allows float64's own rounding of a 64-bit integer (half an ulp).
    exact = [sum(int(np.rint(v[i] * f)) for v in vs) for i in range(3)]

    def close(got: Any, want: list[int]) -> None:
        for g, w in zip(np.asarray(got) * f, want, strict=True):
            assert abs(float(g) - w) <= abs(w) * 2.0**-52, (g, w)

    close(aes_site.decrypt(summed), exact)
    bound = len(vs) * AesParams().fresh_bound * abs(scalar)
    if bound > INT64_MAX:
        with pytest.raises(HEError):
            aes_aggregator.mul_scalar(summed, scalar)
    else:
        close(aes_site.decrypt(aes_aggregator.mul_scalar(summed, scalar)), [w * scalar for w in exact])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=1, max_value=2000), headroom=st.integers(min_value=0, max_value=20))
def test_bound_arithmetic_never_admits_a_wrap(n: int, headroom: int) -> None:
    """Whatever the headroom, a sum is allowed exactly when n fresh bounds fit in int64."""
    secret, public = generate_key(AesParams(headroom_bits=headroom))
    site, agg = AesCtrBackend(secret), AesCtrBackend(public)
    one = agg.deserialize(site.serialize(site.encrypt(np.array([0.5]))))
    fits = n * AesParams(headroom_bits=headroom).fresh_bound <= INT64_MAX
    if fits:
        assert site.decrypt(agg.sum([one] * n))[0] == 0.5 * n
    else:
        with pytest.raises(HEError, match="could overflow"):
            agg.sum([one] * n)


def test_large_sites_are_not_range_limited(aes_key: tuple[bytes, bytes]) -> None:
    """The issue: with E(n*w), a site of 100,000 examples could send only |w| < 21. With E(w*n/U) it can
    send weights a thousand times larger, and the average is still exact to fixed-point precision."""
    from medcloud.errors import InvalidInput
    from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, run_fedavg

    site_be, agg_be = AesCtrBackend(aes_key[0]), AesCtrBackend(aes_key[1])
    targets = {"big": np.full(5, 1500.0), "small": np.full(5, -3.0)}
    counts = {"big": 100_000, "small": 250}
    unit = SPEC.weight_unit
    assert unit == 1024.0  # the aes scheme's own unit (CKKS keeps 1: its error would grow by U/n)
    sites = [FedAvgSite(n, site_be, lambda w, t=targets[n]: t, counts[n], weight_unit=unit) for n in targets]
    model, _ = run_fedavg(FedAvgAggregator(agg_be), sites, np.zeros(5), rounds=1)
    got = site_be.decrypt(site_be.deserialize(model.payload)) / model.total_weight
    want = (1500.0 * 100_000 - 3.0 * 250) / 100_250
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(HEError, match="range"):  # the old scheme: 1500 * 100,000 is far past 2^21
        site_be.encrypt(targets["big"] * counts["big"])
    mixed = [FedAvgSite("a", site_be, lambda w: w, 10), FedAvgSite("b", site_be, lambda w: w, 10, weight_unit=2.0)]
    with pytest.raises(InvalidInput, match="one weight unit"):
        run_fedavg(FedAvgAggregator(agg_be), mixed, np.zeros(5), rounds=1)
    with pytest.raises(InvalidInput, match="weight unit"):
        FedAvgSite("c", site_be, lambda w: w, 10, weight_unit=0.0)
