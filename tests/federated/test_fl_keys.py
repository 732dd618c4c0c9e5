from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from medcloud.errors import InvalidInput
from medcloud.federated.he import NoSecretKey
from medcloud.federated.keys import KeyPaths, aggregator_backend, ckks_keygen, site_backend

pytest.importorskip("tenseal")


def _ceremony(tmp_path: Path, sites: list[str]) -> dict[str, KeyPaths]:
    public = tmp_path / "public"
    paths = {s: KeyPaths(s, tmp_path / s, public) for s in sites}
    for s in sites[1:]:
        ckks_keygen(paths[s], lead=False)  # identities first
    ckks_keygen(paths[sites[0]], lead=True)  # lead generates and seals
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
    with pytest.raises(InvalidInput, match="not for this site"):
        ckks_keygen(paths["b"], lead=False)
