"""SuperNode authentication, without processes: the site key (`medcloud fl site-key`) and the command
lines `fl server`, `fl site` and `fl enroll` become (os.execve is intercepted). The real SuperLink
refusing a SuperNode whose key was never enrolled is in test_fl_deploy.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from typer.testing import CliRunner

from medcloud.errors import ConfigError
from medcloud.federated.certs import (
    SUPERNODE_KEY,
    SUPERNODE_PUB,
    check_private_key_file,
    read_supernode_public_key,
    write_supernode_key,
)

pytest.importorskip("flwr")


@pytest.fixture()
def execs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """Every os.execve the commands attempt, instead of becoming that program."""
    seen: list[tuple[list[str], dict[str, str]]] = []

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.append((list(argv), dict(env)))

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.delenv("FLWR_HOME", raising=False)
    return seen


def _invoke(args: list[str]) -> Any:
    from medcloud.federated.cli import app

    return CliRunner().invoke(app, args)


def test_site_key_private_0600_public_holds_no_secret(tmp_path: Path) -> None:
    site_dir = tmp_path / "secure" / "A"
    old_umask = os.umask(0o000)  # a careless umask must not loosen the key's mode
    try:
        result = _invoke(["site-key", "--site", "A", "--site-dir", str(site_dir)])
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0, result.output
    key_path, pub_path = site_dir / SUPERNODE_KEY, site_dir / SUPERNODE_PUB
    assert str(pub_path) in result.output
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(site_dir.stat().st_mode) == 0o700
    # Flower reads exactly these formats: an OpenSSH ECDSA private key, an OpenSSH public key line.
    private = serialization.load_ssh_private_key(key_path.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
    text = pub_path.read_text()
    assert text.count("\n") == 1 and text.startswith("ecdsa-sha2-nistp384 ")
    assert text.rstrip().endswith(" medcloud-site:A")
    assert "PRIVATE" not in text
    public = serialization.load_ssh_public_key(text.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.public_numbers() == private.public_key().public_numbers()
    # Nothing in the public file is the private scalar, in any encoding of the PEM body.
    scalar = private.private_numbers().private_value
    assert format(scalar, "x") not in text and str(scalar) not in text
    fingerprint, site = read_supernode_public_key(pub_path)
    assert site == "A" and fingerprint in result.output

    # Idempotent: a second run keeps the key (the enrollment stays valid); --rotate replaces it.
    again = _invoke(["site-key", "--site", "A", "--site-dir", str(site_dir), "--out", str(tmp_path / "A.pub")])
    assert again.exit_code == 0 and "existing SuperNode key" in again.output
    assert (tmp_path / "A.pub").read_text() == text
    rotated = _invoke(["site-key", "--site", "A", "--site-dir", str(site_dir), "--rotate"])
    assert rotated.exit_code == 0 and pub_path.read_text() != text
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_keys_refused(tmp_path: Path) -> None:
    key_path, _, _, _ = write_supernode_key(tmp_path / "A", "A")
    key_path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        check_private_key_file(key_path)
    with pytest.raises(ConfigError, match="PRIVATE key"):
        read_supernode_public_key(key_path)  # the operator was handed the wrong file
    ed = ed25519.Ed25519PrivateKey.generate()  # a valid OpenSSH key, but Flower's nodes sign with ECDSA
    bad = tmp_path / "ed.pub"
    bad.write_bytes(ed.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    with pytest.raises(ConfigError, match="NIST curve"):
        read_supernode_public_key(bad)
    bad.write_text("not a key\n")
    with pytest.raises(ConfigError, match="OpenSSH public key"):
        read_supernode_public_key(bad)
    with pytest.raises(ConfigError, match="spaces"):
        write_supernode_key(tmp_path / "B", "site B")


def _server_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["server", "--public", str(tmp_path / "pub"), "--mode", "plain", "--sites", "2",
            "--workdir", str(tmp_path / "srv"), *extra]  # fmt: skip


def test_server_supernode_auth_default_with_tls(tmp_path: Path, execs: list[Any]) -> None:
    assert _invoke(_server_args(tmp_path, "--certs", str(tmp_path / "certs"))).exit_code == 0
    assert _invoke(_server_args(tmp_path, "--certs", str(tmp_path / "certs"), "--no-supernode-auth")).exit_code == 0
    assert _invoke(_server_args(tmp_path, "--insecure")).exit_code == 0
    assert ["--enable-supernode-auth" in argv for argv, _ in execs] == [True, False, False]
    # The SuperLink's state (enrolments) is kept in the workdir, so a restart keeps it.
    db = str((tmp_path / "srv" / "superlink.db").resolve())
    assert all(argv[argv.index("--database") + 1] == db for argv, _ in execs)
    assert _invoke(_server_args(tmp_path, "--insecure", "--state-in-memory")).exit_code == 0
    assert "--database" not in execs[-1][0]
    execs.pop()
    # Flower refuses auth without TLS; so does the CLI, before starting anything.
    refused = _invoke(_server_args(tmp_path, "--insecure", "--supernode-auth"))
    assert isinstance(refused.exception, ConfigError) and len(execs) == 3


def test_site_uses_its_key(tmp_path: Path, execs: list[Any]) -> None:
    key_path, _, _, _ = write_supernode_key(tmp_path / "A", "A")
    ca = tmp_path / "ca.crt"
    base = ["site", "--site", "A", "--site-index", "0", "--public", str(tmp_path / "pub"), "--superlink", "h:1"]
    flag = "--auth-supernode-private-key"

    def key_arg(argv: list[str]) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv else None

    assert _invoke([*base, "--site-dir", str(tmp_path / "A"), "--ca", str(ca)]).exit_code == 0
    assert key_arg(execs[-1][0]) == str(key_path.resolve())  # found in the site's secret folder
    other = tmp_path / "elsewhere.key"
    other.write_bytes(key_path.read_bytes())
    other.chmod(0o600)
    assert _invoke([*base, "--site-dir", str(tmp_path / "B"), "--ca", str(ca), "--auth-key", str(other)]).exit_code == 0
    assert key_arg(execs[-1][0]) == str(other.resolve())
    assert _invoke([*base, "--site-dir", str(tmp_path / "B"), "--ca", str(ca)]).exit_code == 0
    assert key_arg(execs[-1][0]) is None  # no key: a node for a SuperLink without auth
    assert _invoke([*base, "--site-dir", str(tmp_path / "A"), "--ca", str(ca), "--no-node-auth"]).exit_code == 0
    assert key_arg(execs[-1][0]) is None
    n = len(execs)
    other.chmod(0o644)
    loose = _invoke([*base, "--site-dir", str(tmp_path / "B"), "--ca", str(ca), "--auth-key", str(other)])
    assert isinstance(loose.exception, ConfigError) and "chmod 600" in str(loose.exception)
    insecure = _invoke([*base, "--site-dir", str(tmp_path / "A"), "--insecure", "--auth-key", str(key_path)])
    assert isinstance(insecure.exception, ConfigError) and len(execs) == n


def test_enroll_registers_public_key(tmp_path: Path, execs: list[Any]) -> None:
    _, pub_path, fingerprint, _ = write_supernode_key(tmp_path / "A", "A")
    ca = tmp_path / "ca.crt"
    ca.write_text("unused here")
    args = ["enroll", "--workdir", str(tmp_path / "srv"), "--superlink", "127.0.0.1:9", "--ca", str(ca)]
    result = _invoke([*args, "--public-key", str(pub_path)])
    assert result.exit_code == 0, result.output
    assert fingerprint in result.output
    argv, env = execs[-1]
    assert argv[1:] == ["supernode", "register", str(pub_path.resolve()), "medcloud", "--name", "A"]
    config = (Path(env["FLWR_HOME"]) / "config.toml").read_text()
    assert 'address = "127.0.0.1:9"' in config and str(ca.resolve()) in config
    assert _invoke([*args, "--public-key", str(pub_path), "--name", "hospital-a"]).exit_code == 0
    assert execs[-1][0][-2:] == ["--name", "hospital-a"]
    wrong = _invoke([*args, "--public-key", str(tmp_path / "A" / SUPERNODE_KEY)])
    assert isinstance(wrong.exception, ConfigError) and len(execs) == 2
