from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from medcloud.errors import InvalidInput
from medcloud.federated.ceremony import own_fingerprint, trust
from medcloud.federated.he import NoSecretKey
from medcloud.federated.keys import KeyPaths, aggregator_backend, ckks_keygen, shared_keygen, site_backend

pytest.importorskip("tenseal")


def _ceremony(tmp_path: Path, sites: list[str]) -> dict[str, KeyPaths]:
    public = tmp_path / "public"
    paths = {s: KeyPaths(s, tmp_path / s, public) for s in sites}
    for s in sites:
        ckks_keygen(paths[s], lead=False)  # identities first
    for s in sites:  # every pair confirms fingerprints (out of band in real life)
        for o in sites:
            if o != s:
                trust(paths[s], o, own_fingerprint(paths[o]))
    shared_keygen(paths[sites[0]], True, "ckks", sites)  # lead generates, seals to the named parties, signs
    for s in sites[1:]:
        assert "secret key unsealed" in ckks_keygen(paths[s], lead=False)
    return paths


def test_ckks_ceremony_shares_key_between_sites_only(tmp_path: Path) -> None:
    paths = _ceremony(tmp_path, ["a", "b", "c"])
    public = tmp_path / "public"
    # Secrets stay in site folders, owner-only; the public folder holds no plaintext secret key.
    for p in paths.values():
        assert stat.S_IMODE(p.ckks_secret.stat().st_mode) == 0o600
    secret = paths["a"].ckks_secret.read_bytes()
    assert all(secret not in f.read_bytes() for f in public.iterdir())
    # Every site holds the same key: what b encrypts, c decrypts.
    b, c = site_backend("ckks", paths["b"]), site_backend("ckks", paths["c"])
    v = np.array([0.5, -1.25, 3.0])
    assert np.max(np.abs(c.decrypt(c.deserialize(b.serialize(b.encrypt(v)))) - v)) < 1e-6


def test_aggregator_built_from_public_material_cannot_decrypt(tmp_path: Path) -> None:
    paths = _ceremony(tmp_path, ["a", "b"])
    agg = aggregator_backend("ckks", tmp_path / "public")
    site = site_backend("ckks", paths["a"])
    summed = agg.add(agg.deserialize(site.serialize(site.encrypt(np.ones(3)))), agg.encrypt(np.ones(3)))
    with pytest.raises(NoSecretKey):
        agg.decrypt(summed)
    np.testing.assert_allclose(site.decrypt(site.deserialize(agg.serialize(summed))), 2.0, atol=1e-6)


def test_sealed_key_opens_only_for_its_site(tmp_path: Path) -> None:
    paths = _ceremony(tmp_path, ["a", "b", "c"])
    # c's blob renamed to look like b's does not open with b's identity.
    paths["b"].ckks_secret.unlink()
    paths["b"].ckks_sealed("b").write_bytes(paths["c"].ckks_sealed("c").read_bytes())
    with pytest.raises(InvalidInput, match="not the one the lead signed"):
        ckks_keygen(paths["b"], lead=False)


def test_keygen_cli_threshold_options_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--threshold`, `--dropped`, `--recoverer` reach the t-of-N steps (OpenFHE itself: py310 tests)."""
    from typer.testing import CliRunner

    from medcloud.federated import keys
    from medcloud.federated.cli import app
    from medcloud.federated.he import bridge

    calls: list[tuple[object, ...]] = []
    # Key generation goes through the bridge (an OpenFHE sidecar where openfhe does not import).
    monkeypatch.setattr(
        bridge, "threshold_keygen", lambda p, parties, t: calls.append(("keygen", p.site, parties, t)) or ["k"]
    )
    monkeypatch.setattr(keys, "threshold_release", lambda p, d, r: calls.append(("release", p.site, d, r)) or ["r"])
    monkeypatch.setattr(keys, "threshold_recover", lambda p, d: calls.append(("recover", p.site, d)) or ["v"])
    base = ["keygen", "--mode", "threshold", "--site-dir", str(tmp_path / "s"), "--public", str(tmp_path / "p")]
    runner = CliRunner()
    for extra in (
        ["--site", "a", "--parties", "a,b,c", "--threshold", "2"],
        ["--site", "b", "--parties", "a,b,c"],
        ["--site", "c", "--dropped", "a", "--recoverer", "b"],
        ["--site", "b", "--dropped", "a", "--recoverer", "b"],
    ):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 0, result.output
    assert calls == [
        ("keygen", "a", ["a", "b", "c"], 2),
        ("keygen", "b", ["a", "b", "c"], None),
        ("release", "c", "a", "b"),
        ("recover", "b", "a"),
    ]
    assert runner.invoke(app, [*base, "--site", "c", "--dropped", "a"]).exit_code != 0  # no --recoverer
