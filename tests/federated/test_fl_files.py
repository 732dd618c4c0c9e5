"""Files the federated code writes (key ceremony, TLS and SuperNode keys, the `flwr` connection):
whole or not at all (`fsio.write_atomic`), with their modes whatever the umask: 0600 for
secrets, 0644 for what others must read."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from medcloud.federated.certs import write_dev_ca, write_supernode_key
from medcloud.federated.cli import write_flwr_connection
from medcloud.federated.keys import KeyPaths, shared_ceremony


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)  # a hardened site: new files private unless the writer says otherwise
    try:
        yield
    finally:
        os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


def test_key_ceremony_files_keep_their_modes_whatever_the_umask(tmp_path: Path, strict_umask: None) -> None:
    sites = ["a", "b", "c"]
    shared_ceremony([KeyPaths(s, tmp_path / s, tmp_path / "public") for s in sites], "aes")
    for s in sites:
        secret = _modes(tmp_path / s)
        kept = {"identity.x25519", "identity.ed25519", "aes.secret", "trusted-parties.json", "aes.ceremony.json"}
        assert set(secret) == kept and set(secret.values()) == {0o600}
    public = _modes(tmp_path / "public")
    # The hub relays the public folder: every file in it must be readable by others, sealed keys included.
    # the public parameters, 3 X25519 and 3 Ed25519 identities, 2 sealed keys, the signed manifest and its signature
    assert len(public) == 1 + 3 + 3 + 2 + 2 and set(public.values()) == {0o644}, public
    assert not [p for p in tmp_path.rglob(".*")], "a temporary file was left behind"


def test_tls_and_supernode_keys_keep_their_modes(tmp_path: Path, strict_umask: None) -> None:
    write_dev_ca(tmp_path / "certs")
    assert _modes(tmp_path / "certs") == {"ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600}
    key, pub, _, created = write_supernode_key(tmp_path / "site", "a", tmp_path / "out" / "a.pub")
    assert created and stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert not [p for p in tmp_path.rglob(".*")]


def test_flwr_connection_file_is_replaced_whole(tmp_path: Path, strict_umask: None) -> None:
    first = write_flwr_connection(tmp_path / "home", "127.0.0.1:9092", None)
    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    second = write_flwr_connection(tmp_path / "home", "hub.example:9092", ca)
    assert first == second and stat.S_IMODE(second.stat().st_mode) == 0o644
    text = second.read_text()
    assert 'address = "hub.example:9092"' in text and "insecure" not in text and str(ca.resolve()) in text
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["config.toml"]
