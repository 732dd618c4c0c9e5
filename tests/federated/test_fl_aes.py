"""The additive AES-256-CTR backend: arithmetic, precision, refusals, key ceremony, protocols."""

from __future__ import annotations

import json
import stat
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medcloud.federated.ceremony import own_fingerprint, trust
from medcloud.federated.he import HEError, NoSecretKey, PlaintextBackend
from medcloud.federated.he.aes import AesCtrBackend, AesParams, generate_key
from medcloud.federated.he.base import frame, split_header
from medcloud.federated.keys import KeyPaths, aggregator_backend, shared_keygen, site_backend


def test_roundtrip_sum_and_scalars(aes_site: AesCtrBackend, aes_aggregator: AesCtrBackend) -> None:
    rng = np.random.default_rng(1)
    vs = [rng.normal(scale=100.0, size=10_001) for _ in range(5)]
    blobs = [aes_site.serialize(aes_site.encrypt(v)) for v in vs]
    assert all(len(b) < 8 * 10_001 + 400 for b in blobs)  # 8 bytes per value plus a small header
    summed = aes_aggregator.sum_serialized(blobs)  # the aggregator adds without any key
    got = aes_site.decrypt(aes_site.deserialize(summed))
    assert np.max(np.abs(got - np.sum(vs, axis=0))) < 5 * 2.0**-32
    # Public scalars: integers exactly, others to 16 fractional bits; the scale travels along.
    ct = aes_site.deserialize(summed)
    np.testing.assert_allclose(aes_site.decrypt(aes_aggregator.mul_scalar(ct, -3)), -3 * np.sum(vs, axis=0), atol=1e-8)
    # A fractional scalar adds 16 bits of scale: with the default 10 bits of headroom the public bound
    # of a sum of fresh uploads cannot take that, so it is refused rather than allowed to wrap ...
    with pytest.raises(HEError, match="would leave the aes backend's range"):
        aes_aggregator.mul_scalar(ct, 0.25)
    # ... and with headroom for it (a key made with 20 bits), it is accurate to 16 fractional bits.
    secret, public = generate_key(AesParams(headroom_bits=20))
    roomy_site, roomy_agg = AesCtrBackend(secret), AesCtrBackend(public)
    roomy = roomy_agg.sum_serialized([roomy_site.serialize(roomy_site.encrypt(v)) for v in vs])
    half = roomy_agg.mul_scalar(roomy_agg.deserialize(roomy), 0.25)
    np.testing.assert_allclose(roomy_site.decrypt(half), 0.25 * np.sum(vs, axis=0), atol=1e-8)
    with pytest.raises(HEError, match="different scales"):
        roomy_agg.add(half, roomy_agg.deserialize(roomy))
    # Adding a ciphertext to itself doubles its pads' coefficients, and still decrypts.
    np.testing.assert_allclose(aes_site.decrypt(aes_aggregator.add(ct, ct)), 2 * np.sum(vs, axis=0), atol=1e-8)


def test_ciphertexts_look_random_and_never_repeat(aes_site: AesCtrBackend) -> None:
    zeros = np.zeros(4096)
    a, b = aes_site.encrypt(zeros).chunks[0].values, aes_site.encrypt(zeros).chunks[0].values
    assert not np.any(a == b)  # fresh pads every time: equal inputs give unrelated ciphertexts
    bits = np.unpackbits(a.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01  # an encryption of zeros is not zeros, nor biased


def test_keystream_is_one_aes_ctr_stream_across_pieces(aes_site: AesCtrBackend, aes_key: tuple[bytes, bytes]) -> None:
    """Long vectors take the keystream in 4 MiB pieces; the pieces continue one AES-256-CTR stream
    (a restarted counter would repeat pads, and pads must never repeat)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    n = (4 << 20) // 8 * 2 + 3  # two full pieces and a bit
    nonce = bytes(range(12))
    key = bytes.fromhex(json.loads(aes_key[0])["key"])
    expect = Cipher(algorithms.AES(key), modes.CTR(nonce + bytes(4))).encryptor().update(bytes(8 * n))
    assert aes_site._keystream(nonce, n).tobytes() == expect


def test_aggregator_holds_no_key(
    aes_site: AesCtrBackend, aes_aggregator: AesCtrBackend, aes_key: tuple[bytes, bytes]
) -> None:
    assert not aes_aggregator.can_decrypt and aes_site.can_decrypt
    assert json.loads(aes_key[0])["key"] not in aes_key[1].decode()
    ct = aes_aggregator.deserialize(aes_site.serialize(aes_site.encrypt(np.ones(8))))
    with pytest.raises(NoSecretKey):
        aes_aggregator.decrypt(ct)
    with pytest.raises(NoSecretKey):
        aes_aggregator.encrypt(np.ones(8))
    # A public value (DeepProtect's initial model) takes ciphertext form; adding a aes_site's
    # encryption to it hides the sum again.
    start = aes_aggregator.encrypt_public(np.full(8, 2.0))
    total = aes_aggregator.add(start, ct)
    assert total.chunks[0].terms and not start.chunks[0].terms
    np.testing.assert_allclose(aes_site.decrypt(total), 3.0, atol=1e-9)


def test_refuses_bad_values_bytes_and_foreign_keys(aes_site: AesCtrBackend, aes_aggregator: AesCtrBackend) -> None:
    limit = AesParams().max_abs
    with pytest.raises(HEError, match="range"):
        aes_site.encrypt(np.array([0.0, limit]))
    with pytest.raises(HEError, match="NaN"):
        aes_site.encrypt(np.array([np.nan]))
    good = aes_site.serialize(aes_site.encrypt(np.arange(16.0)))
    header, blobs = split_header(good)

    def reframed(**changes: Any) -> bytes:
        h = {**header, **changes}
        extra = {k: v for k, v in h.items() if k not in ("backend", "length", "sizes")}
        return frame(h["backend"], h["length"], blobs, extra)

    nonce = header["terms"][0][0]
    bad = {
        "truncated": good[:-3],
        "bad magic": b"XXXX" + good[4:],
        "other backend": reframed(backend="ckks"),
        "other format": reframed(format="ckks-rns-packed"),
        "newer version": reframed(version=3),
        "v1 ciphertext without a bound": reframed(version=1),
        "no bound": reframed(bound=None),
        "length mismatch": reframed(length=15),
        "short nonce": reframed(terms=[[nonce[:-2], 1]]),
        "coefficient too large": reframed(terms=[[nonce, 2**64]]),
        "duplicate nonce": reframed(terms=[[nonce, 1], [nonce, 1]]),
        "scale out of range": reframed(scale_bits=99),
        "other key": reframed(key_id="0" * 16),
    }
    for what, data in bad.items():
        with pytest.raises(HEError):
            aes_site.deserialize(data)
            pytest.fail(what)
    other = AesCtrBackend(generate_key()[0])
    with pytest.raises(HEError, match="key"):
        other.deserialize(good)  # a aes_site with another key refuses instead of decrypting garbage
    with pytest.raises(HEError, match="length mismatch"):
        aes_aggregator.add(aes_site.encrypt(np.ones(3)), aes_site.encrypt(np.ones(4)))
    with pytest.raises(HEError, match="unreadable"):
        AesCtrBackend(b'{"format": "aes-ctr-additive", "version": 1}')
    # Nothing above changed the good ciphertext's meaning.
    np.testing.assert_allclose(aes_site.decrypt(aes_site.deserialize(good)), np.arange(16.0), atol=1e-9)


def _fedavg_sites(backend: Any, data: list[Any]) -> list[Any]:
    from medcloud.federated import tabular
    from medcloud.federated.protocol import FedAvgSite

    return [FedAvgSite(s.name, backend, partial(tabular.local_train, site=s), s.n_train) for s in data]


def test_fedavg_30_rounds_matches_plaintext(
    breast_cancer_sites: Any, aes_site: AesCtrBackend, aes_aggregator: AesCtrBackend
) -> None:
    from medcloud.federated import tabular
    from medcloud.federated.protocol import FedAvgAggregator, decode_plain, run_fedavg

    w0 = np.zeros(tabular.n_params())
    plain, _ = run_fedavg(
        FedAvgAggregator(PlaintextBackend()), _fedavg_sites(PlaintextBackend(), breast_cancer_sites), w0, 30
    )
    enc, stats = run_fedavg(FedAvgAggregator(aes_aggregator), _fedavg_sites(aes_site, breast_cancer_sites), w0, 30)
    assert enc.encrypted  # the aggregator handed back a ciphertext, never a model it could read
    w_plain = decode_plain(plain.payload)
    w_enc = aes_site.decrypt(aes_site.deserialize(enc.payload)) / enc.total_weight
    assert np.max(np.abs(w_enc - w_plain)) < 1e-5
    x, y = tabular.pooled_test(breast_cancer_sites)
    assert tabular.accuracy(w_enc, x, y) == tabular.accuracy(w_plain, x, y)
    assert max(stats[-1].bytes_up.values()) < 8 * tabular.n_params() + 400


def test_aes_ceremony_keeps_the_key_on_sites(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    public = tmp_path / "public"
    paths = {s: KeyPaths(s, tmp_path / s, public) for s in names}
    for s in names:
        shared_keygen(paths[s], False, "aes")
    for s in names:
        for o in names:
            if o != s:
                trust(paths[s], o, own_fingerprint(paths[o]))
    assert "AES key generated; public parameters published" in shared_keygen(paths["a"], True, "aes", names)
    for s in names[1:]:
        assert "secret key unsealed" in shared_keygen(paths[s], False, "aes")
    raw_key = json.loads(paths["a"].shared_secret("aes").read_bytes())["key"]
    for p in paths.values():
        assert stat.S_IMODE(p.shared_secret("aes").stat().st_mode) == 0o600
    assert all(raw_key.encode() not in f.read_bytes() for f in public.iterdir())
    b, c = site_backend("aes", paths["b"]), site_backend("aes", paths["c"])
    v = np.array([0.5, -1.25, 3.0])
    agg = aggregator_backend("aes", public)
    summed = agg.sum_serialized([b.serialize(b.encrypt(v)), c.serialize(c.encrypt(v))])
    np.testing.assert_allclose(c.decrypt(c.deserialize(summed)), 2 * v, atol=1e-9)
    with pytest.raises(NoSecretKey):
        agg.decrypt(agg.deserialize(summed))
    # A sealed aes key does not open as another mode's (the AAD binds mode, ceremony and site), even
    # with every file of the aes ceremony renamed to look like a ckks one.
    from medcloud.errors import InvalidInput
    from medcloud.federated.ceremony import manifest_path, signature_path

    paths["b"].shared_sealed("b", "ckks").write_bytes(paths["b"].shared_sealed("b", "aes").read_bytes())
    paths["b"].shared_public("ckks").write_bytes(paths["b"].shared_public("aes").read_bytes())
    manifest_path(paths["b"], "ckks").write_bytes(manifest_path(paths["b"], "aes").read_bytes())
    signature_path(paths["b"], "ckks").write_bytes(signature_path(paths["b"], "aes").read_bytes())
    with pytest.raises(InvalidInput, match="manifest is unreadable: not a ceremony manifest of this mode"):
        shared_keygen(paths["b"], False, "ckks")


def test_keygen_cli_aes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medcloud.cli import app

    runner = CliRunner()

    def keygen(site: str, *extra: str) -> Any:
        args = ["fl", "keygen", "--mode", "aes", "--site", site, "--site-dir", str(tmp_path / site)]
        return runner.invoke(app, [*args, "--public", str(tmp_path / "public"), *extra])

    def trust(site: str, party: str, code: str) -> Any:
        args = ["fl", "trust", "--site", site, "--site-dir", str(tmp_path / site), "--public", str(tmp_path / "public")]
        return runner.invoke(app, [*args, "--party", party, "--fingerprint", code])

    codes = {}
    for site in ("a", "b"):
        out = keygen(site)
        assert out.exit_code == 0, out.output
        codes[site] = out.output.split("fingerprint ")[1].split()[0]  # what the operator reads aloud
    assert "waiting for the lead's signed aes ceremony" in keygen("b").output
    misread = codes["a"][:-1] + ("0" if codes["a"][-1] != "0" else "1")
    refused = trust("b", "a", misread)
    assert refused.exit_code != 0 and "do not trust it" in str(refused.exception)
    assert trust("b", "a", codes["a"].lower()).exit_code == 0  # case and dashes do not matter
    no_confirm = keygen("a", "--lead", "--parties", "a,b")
    assert no_confirm.exit_code != 0 and "has not been confirmed" in str(no_confirm.exception)
    assert trust("a", "b", codes["b"]).exit_code == 0
    lead = keygen("a", "--lead", "--parties", "a,b")
    assert lead.exit_code == 0 and "secret key sealed for b" in lead.output, lead.output
    ceremony_id = lead.output.split("ceremony ")[1].split()[0]
    wrong = keygen("b", "--ceremony", "0" * 16)
    assert wrong.exit_code != 0 and "not 0000000000000000" in str(wrong.exception)
    assert "secret key unsealed" in keygen("b", "--ceremony", ceremony_id).output
    bad = runner.invoke(app, ["fl", "keygen", "--mode", "rot13", "--site", "a", "--site-dir", str(tmp_path / "x"),
                              "--public", str(tmp_path / "public")])  # fmt: skip
    assert bad.exit_code != 0 and "rot13" in str(bad.exception)


def test_deepprotect_refresh_bounds_decryption_work(breast_cancer_sites: Any) -> None:
    """The running E(w) gains one keystream term per update; past `refresh_terms` the server asks a
    site for a fresh encryption of the stepped model, which replaces E(w) only if nothing came in
    since. The model stays exactly the plaintext gradient steps either way."""
    from medcloud.federated import tabular
    from medcloud.federated.protocol import DeepProtectServer, DeepProtectSite

    secret, public = generate_key(AesParams(refresh_terms=4))
    site_be, agg = AesCtrBackend(secret), AesCtrBackend(public)
    data = breast_cancer_sites[:3]
    sites = [DeepProtectSite(s.name, site_be, partial(tabular.gradient, x=s.x_train, y=s.y_train), 0.3) for s in data]
    w0 = np.zeros(tabular.n_params())
    server = DeepProtectServer(agg, agg.serialize(agg.encrypt_public(w0)), max_staleness=8)
    w = w0.copy()
    terms = []
    for i in range(12):
        s, d = sites[i % 3], data[i % 3]
        version, blob = server.download()
        up = s.update(blob, refresh=server.refresh_due())
        server.upload(s.name, up.update, version, up.refresh)
        w = w - 0.3 * tabular.gradient(w, d.x_train, d.y_train)
        terms.append(len(agg.deserialize(server.download()[1]).chunks[0].terms))
    assert server.refreshes >= 2 and max(terms) <= 4
    np.testing.assert_allclose(site_be.decrypt(site_be.deserialize(server.download()[1])), w, atol=1e-6)

    # A refresh made on a version that has since moved on is dropped; its update is added instead.
    refreshed = server.refreshes
    v, blob = server.download()
    late = sites[0].update(blob, refresh=True)
    v2, blob2 = server.download()
    server.upload(sites[1].name, sites[1].step(blob2), v2)
    server.upload(sites[0].name, late.update, v, late.refresh)
    assert server.refreshes == refreshed
    w1 = w - 0.3 * tabular.gradient(w, data[1].x_train, data[1].y_train)
    w_expect = w1 - 0.3 * tabular.gradient(w, data[0].x_train, data[0].y_train)  # stale: made on w
    np.testing.assert_allclose(site_be.decrypt(site_be.deserialize(server.download()[1])), w_expect, atol=1e-6)
