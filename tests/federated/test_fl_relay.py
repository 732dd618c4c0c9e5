"""The public key folder through the hub's API (`/api/v1/fl/{federation}/public`, `medcloud fl sync`).

Each site keeps its own copy of the folder; the hub relays. A full aes ceremony runs through it; a hub
that alters a relayed file is caught by the ceremony at the site; the hub's own rules (authorship by
name, first writer, no secret-looking names, federation = a project granted to the site) are refused
where they must be.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tests.live_hub import hub_in_thread
from typer.testing import CliRunner

from medcloud.cli import app as cli_app
from medcloud.config import load_settings
from medcloud.errors import InvalidInput
from medcloud.federated import ceremony
from medcloud.federated.keys import KeyPaths, shared_keygen, site_backend
from medcloud.federated.relay import author_of, validate_public_name
from medcloud.federated.relay_client import RelayClient, sync_public_folder
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.tokens import issue_token
from medcloud.store.tables import fl_public_files

MODE = "aes"
FED = "lung-fl"
SITES = ("a", "b", "c")


@dataclass
class Relay:
    client: TestClient
    state: HubState
    tokens: dict[str, str]

    def site(self, name: str) -> RelayClient:
        return RelayClient(token=self.tokens[name], client=self.client)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    settings = load_settings(data_dir=tmp_path / "hub")
    state = HubState.open(settings)
    cat = state.catalog
    tokens = {s: issue_token(cat, role="site", site=s, projects=[FED]).token for s in SITES}
    tokens["other"] = issue_token(cat, role="site", site="other", projects=["brain"]).token
    tokens["researcher"] = issue_token(cat, role="researcher", projects=[FED]).token
    tokens["admin"] = issue_token(cat, role="admin").token
    with TestClient(create_app(settings, state=state), client=("127.0.0.1", 50000)) as client:
        yield Relay(client, state, tokens)
    state.close()


def _paths(tmp_path: Path) -> dict[str, KeyPaths]:
    """Each site has its own secret folder AND its own copy of the public folder."""
    return {s: KeyPaths(s, tmp_path / s / "secret", tmp_path / s / "public") for s in SITES}


def _sync(relay: Relay, paths: dict[str, KeyPaths], *sites: str) -> None:
    for s in sites:
        sync_public_folder(relay.site(s), FED, s, paths[s].public_dir)


def _identities_and_trust(relay: Relay, paths: dict[str, KeyPaths]) -> None:
    for s in SITES:
        shared_keygen(paths[s], False, MODE)  # this site's identity, into its own public folder
    _sync(relay, paths, *SITES, *SITES)  # everyone pushes, then everyone pulls the others'
    for s in SITES:  # fingerprints read aloud on a second channel
        for o in SITES:
            if o != s:
                ceremony.trust(paths[s], o, ceremony.own_fingerprint(paths[o]))


def test_a_whole_aes_ceremony_runs_through_the_hub(relay: Relay, tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    _identities_and_trust(relay, paths)
    shared_keygen(paths["a"], True, MODE, ["b", "c"])
    _sync(relay, paths, "a", "b", "c")
    for s in ("b", "c"):
        assert any("secret key unsealed" in line for line in shared_keygen(paths[s], False, MODE))
    v = np.array([0.25, -3.5, 7.0])
    b, c = site_backend(MODE, paths["b"]), site_backend(MODE, paths["c"])
    np.testing.assert_allclose(c.decrypt(c.deserialize(b.serialize(b.encrypt(v)))), v, atol=1e-9)
    # The hub holds only public files: no secret key among them.
    listed = relay.client.get(f"/api/v1/fl/{FED}/public", headers=relay.auth("admin")).json()["items"]
    names = {r["name"] for r in listed}
    assert {"aes.public", "aes.ceremony.json", "aes.ceremony.sig", "aes.sealed-b", "aes.sealed-c"} <= names
    assert {r["uploaded_by"] for r in listed if r["name"].startswith("identity-a")} == {"a"}
    secret = paths["b"].shared_secret(MODE).read_bytes()
    blobs = relay.state.settings.resolved_blob_dir
    assert not any(secret in p.read_bytes() for p in blobs.rglob("*") if p.is_file())


def test_a_hub_that_alters_a_relayed_manifest_is_caught_at_the_site(relay: Relay, tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    _identities_and_trust(relay, paths)
    shared_keygen(paths["a"], True, MODE, ["b", "c"])
    _sync(relay, paths, "a")
    # The hub's operator rewrites the manifest (adds a party) and records it as a's newest version.
    doc = json.loads(paths["a"].public_dir.joinpath("aes.ceremony.json").read_text())
    doc["parties"] = [*doc["parties"], "mallory"]
    forged = json.dumps(doc, indent=2, sort_keys=True).encode()
    stored = relay.state.blobs.put_bytes(forged)
    with relay.state.catalog.write() as conn:
        conn.execute(
            sa.insert(fl_public_files).values(
                federation=FED, name="aes.ceremony.json", version=99, sha256=stored.sha256, size=len(forged),
                uploaded_by="a", uploaded_at=sa.func.now(),
            )
        )  # fmt: skip
    _sync(relay, paths, "b")
    assert paths["b"].public_dir.joinpath("aes.ceremony.json").read_bytes() == forged
    with pytest.raises(InvalidInput, match="not signed by a's confirmed key"):
        shared_keygen(paths["b"], False, MODE)
    assert not paths["b"].shared_secret(MODE).exists()


def test_the_hub_refuses_writes_that_are_not_the_sites_to_make(relay: Relay, tmp_path: Path) -> None:
    base = f"/api/v1/fl/{FED}/public"
    ok = relay.client.put(f"{base}/identity-a.x25519.pub", content=b"A" * 32, headers=relay.auth("a"))
    assert ok.status_code == 201 and ok.json()["version"] == 1
    again = relay.client.put(f"{base}/identity-a.x25519.pub", content=b"A" * 32, headers=relay.auth("a"))
    assert again.status_code == 200 and again.json()["version"] == 1  # same bytes: nothing new
    # A name that says who wrote it is that site's alone.
    r = relay.client.put(f"{base}/identity-a.x25519.pub", content=b"M" * 32, headers=relay.auth("b"))
    assert r.status_code == 403 and "a's to publish" in r.json()["detail"]
    r = relay.client.put(f"{base}/threshold.release-a-from-c-to-b.sealed", content=b"x", headers=relay.auth("b"))
    assert r.status_code == 403
    # Any other name belongs to its first writer.
    assert relay.client.put(f"{base}/aes.public", content=b"P1", headers=relay.auth("a")).status_code == 201
    r = relay.client.put(f"{base}/aes.public", content=b"P2", headers=relay.auth("b"))
    assert r.status_code == 409 and "published by a" in r.json()["detail"]
    v2 = relay.client.put(f"{base}/aes.public", content=b"P2", headers=relay.auth("a"))
    assert v2.status_code == 201 and v2.json()["version"] == 2
    got = relay.client.get(f"{base}/aes.public", headers=relay.auth("c"))
    assert got.content == b"P2" and got.headers["x-uploaded-by"] == "a" and got.headers["x-version"] == "2"
    assert got.headers["x-content-sha256"] == hashlib.sha256(b"P2").hexdigest()
    # Secret-looking names and path tricks never get in.
    for name in ("aes.secret", "identity.x25519", "trusted-parties.json", "site.key"):
        r = relay.client.put(f"{base}/{name}", content=b"s", headers=relay.auth("a"))
        assert r.status_code == 400 and "secret" in r.json()["detail"], name
    for name in (".hidden", "..%2Fescape", "a%2Fb"):
        assert relay.client.put(f"{base}/{name}", content=b"s", headers=relay.auth("a")).status_code in (400, 404, 422)
    # Only sites of the federation write; its sites and the aggregator's admin read; nobody else.
    assert relay.client.put(f"{base}/other.json", content=b"{}", headers=relay.auth("other")).status_code == 403
    assert relay.client.get(base, headers=relay.auth("other")).status_code == 403
    assert relay.client.get(base, headers=relay.auth("researcher")).status_code == 403
    assert relay.client.put(f"{base}/x.json", content=b"{}", headers=relay.auth("admin")).status_code == 403
    assert relay.client.get(base, headers=relay.auth("admin")).status_code == 200
    assert relay.client.get(base).status_code == 401
    assert relay.client.get(f"{base}/missing.json", headers=relay.auth("a")).status_code == 404
    # Every write and every read is in the audit trail.
    with relay.state.catalog.read() as conn:
        actions = [r[0] for r in conn.exec_driver_sql("SELECT action FROM audit_events").fetchall()]
    assert actions.count("fl.public.put") >= 3 and "fl.public.read" in actions


def test_too_large_is_413_and_stores_nothing(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medcloud.hub.routes.fl_public.MAX_PUBLIC_FILE_BYTES", 1000)
    r = relay.client.put(f"/api/v1/fl/{FED}/public/big.json", content=b"x" * 1001, headers=relay.auth("a"))
    assert r.status_code == 413
    assert relay.state.catalog.fl_public.latest(FED) == []


def test_the_client_refuses_bytes_that_differ_from_the_listing(tmp_path: Path) -> None:
    """A relay that lists one hash and serves other bytes (a scripted server: no hub would do this)."""
    good, served = b"listed", b"served instead"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/public"):
            row = {"name": "aes.public", "version": 1, "sha256": hashlib.sha256(good).hexdigest(), "size": 6,
                   "uploaded_by": "a", "uploaded_at": None}  # fmt: skip
            return httpx.Response(200, json={"items": [row]})
        return httpx.Response(200, content=served)

    client = RelayClient(token="t", client=httpx.Client(transport=httpx.MockTransport(handler), base_url="http://h"))
    with pytest.raises(InvalidInput, match="do not match the SHA-256"):
        sync_public_folder(client, FED, "b", tmp_path / "public")
    assert not (tmp_path / "public" / "aes.public").exists()


def test_names_say_their_author() -> None:
    assert author_of("identity-site-a.x25519.pub") == "site-a"
    assert author_of("threshold.keyshare-b-for-c.sealed") == "b"
    assert author_of("threshold.release-a-from-c-to-b.sealed") == "c"
    # The signed threshold chain: a link and every detached signature belong to their signer.
    assert author_of("threshold.link-site-b.json") == author_of("threshold.link-site-b.sig") == "site-b"
    assert author_of("threshold.keyshare-b-for-c.sealed.sig") == "b"
    assert author_of("threshold.release-a-from-c-to-b.sealed.sig") == "c"
    assert author_of("aes.ceremony.json") is None
    with pytest.raises(InvalidInput):
        validate_public_name("../x")


def test_fl_sync_command_against_a_real_hub(relay: Relay, tmp_path: Path) -> None:
    public = tmp_path / "a-public"
    paths = KeyPaths("a", tmp_path / "a-secret", public)
    shared_keygen(paths, False, MODE)
    (public / "aes.secret").write_bytes(b"never")  # a mistake in the folder: reported, never uploaded
    token_file = tmp_path / "token"
    token_file.write_text(relay.tokens["a"])
    with hub_in_thread(relay.client.app) as url:
        args = ["fl", "sync", "--federation", FED, "--site", "a", "--public", str(public), "--hub", url]
        out = CliRunner().invoke(cli_app, [*args, "--token-file", str(token_file)])
        assert out.exit_code == 0, out.output
        assert "pushed identity-a.x25519.pub" in out.output and "2 pushed, 0 pulled" in out.output
        assert "skipped aes.secret" in out.output
        again = CliRunner().invoke(cli_app, [*args, "--token-file", str(token_file)])
        assert "0 pushed, 0 pulled, 2 unchanged" in again.output
        token_file.write_text(relay.tokens["other"])  # a site outside the federation
        refused = CliRunner().invoke(cli_app, [*args, "--token-file", str(token_file)])
        assert refused.exit_code != 0
    assert {r["name"] for r in relay.state.catalog.fl_public.latest(FED)} == {
        "identity-a.x25519.pub", "identity-a.ed25519.pub",
    }  # fmt: skip
