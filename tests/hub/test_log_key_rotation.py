"""Rotating the audit log's signing key (`medcloud audit rotate-log-key`): checkpoints signed before stay
verifiable, the rotation statement is signed by both keys (and so is the tree head at the rotation), an
outside verifier follows the chain from the key it trusts (forward and backward) and proves consistency
across the rotation; a checkpoint or a proof signed by a key outside the chain is refused, and so is a
rotation statement that is forged or altered."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from medcloud.cli import app
from medcloud.errors import IntegrityError
from medcloud.security.merkle import (
    LogKey,
    ProofError,
    load_public_key,
    log_id_of,
    rotation_statement,
    trusted_keys,
    verify_proof_document,
    verify_rotation,
)
from tests.hub.conftest import Hub

runner = CliRunner()


def _ingest(hub: Hub, n: int) -> None:
    for i in range(n):
        r = hub.client.put("/api/v1/sites/site-a", json={"target_cases": i + 1}, headers=hub.auth("admin"))
        assert r.status_code == 200, r.text


def _cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def _verify_proof(proof: Path, key: Path, *more: str) -> Any:
    return _cli("audit", "verify-proof", str(proof), "--key", str(key), *more)


def test_rotation_keeps_old_checkpoints_verifiable_and_verifiers_follow_the_chain(hub: Hub, tmp_path: Path) -> None:
    data = str(hub.data_dir)
    _ingest(hub, 3)
    old_pem, sth1, p1 = tmp_path / "old.pem", tmp_path / "sth1.json", tmp_path / "p1.json"
    assert _cli("audit", "log-key", "--data", data, "--out", str(old_pem)).exit_code == 0
    assert _cli("audit", "checkpoint", "--data", data, "--out", str(sth1)).exit_code == 0
    assert _cli("audit", "prove", "2", "--data", data, "--out", str(p1)).exit_code == 0
    key_file = hub.data_dir / "secrets" / "audit-log.ed25519"
    old_private = key_file.read_bytes()

    got = _cli("audit", "rotate-log-key", "--data", data)
    assert got.exit_code == 0, got.output
    statement = json.loads(got.stdout)
    old_id, new_id = statement["old_log_id"], statement["new_log_id"]
    assert old_id == log_id_of(load_public_key(old_pem.read_bytes())) and new_id != old_id
    assert key_file.read_bytes() != old_private and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert not key_file.with_name(key_file.name + ".new").exists()
    verify_rotation(statement)  # both keys signed the statement and the head at the rotation
    assert statement["tree_head"]["tree_size"] >= 3
    # Old checkpoints still verify; the running hub picks the new key up for its next checkpoint.
    assert _cli("audit", "verify", "--data", data).exit_code == 0
    _ingest(hub, 2)
    head = hub.state.catalog.audit.checkpoint()
    assert head.log_id == new_id
    assert hub.state.catalog.audit.verify().ok
    assert [e["action"] for e in hub.state.catalog.audit.page(0, 1000, "audit.log-key.rotate")] == [
        "audit.log-key.rotate"
    ]

    # What a hospital takes home: both public keys and the statement (CLI and API agree).
    keys_json, new_pem = tmp_path / "keys.json", tmp_path / "new.pem"
    assert _cli("audit", "log-keys", "--data", data, "--out", str(keys_json)).exit_code == 0
    doc = json.loads(keys_json.read_text())
    assert doc["current"] == new_id and {k["log_id"] for k in doc["keys"]} == {old_id, new_id}
    assert [k["retired_at"] is not None for k in doc["keys"]] == [True, False]
    api = hub.client.get("/api/v1/audit/log-keys", headers=hub.auth("auditor"))
    assert api.status_code == 200 and api.json()["rotations"] == doc["rotations"]
    assert hub.client.get("/api/v1/audit/log-keys", headers=hub.auth("researcher")).status_code == 403
    assert _cli("audit", "log-key", "--data", data, "--out", str(new_pem)).exit_code == 0

    # A proof signed by the new key, with consistency from the head the hospital saved under the old one.
    p2 = tmp_path / "p2.json"
    assert _cli("audit", "prove", "2", "--data", data, "--since", str(sth1), "--out", str(p2)).exit_code == 0
    assert json.loads(p2.read_text())["tree_head"]["log_id"] == new_id
    # With only the old key it is refused (the new key is unknown to it) ...
    refused = _verify_proof(p2, old_pem, "--since", str(sth1))
    assert isinstance(refused.exception, IntegrityError) and "unknown log key" in str(refused.exception)
    # ... with the rotation chain it holds, forward from the old key and back from the new one.
    ok = _verify_proof(p2, old_pem, "--since", str(sth1), "--keys", str(keys_json))
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["consistent_since"] == json.loads(sth1.read_text())["tree_size"]
    assert _verify_proof(p1, new_pem, "--keys", str(keys_json)).exit_code == 0  # an old proof, new key trusted
    assert isinstance(_verify_proof(p1, new_pem).exception, IntegrityError)  # without the chain: unknown key


def test_unknown_keys_and_forged_rotations_are_refused(hub: Hub, tmp_path: Path) -> None:
    data = str(hub.data_dir)
    _ingest(hub, 2)
    old_pem, sth1 = tmp_path / "old.pem", tmp_path / "sth1.json"
    assert _cli("audit", "log-key", "--data", data, "--out", str(old_pem)).exit_code == 0
    assert _cli("audit", "checkpoint", "--data", data, "--out", str(sth1)).exit_code == 0
    assert _cli("audit", "rotate-log-key", "--data", data).exit_code == 0
    _ingest(hub, 1)
    proof, keys_json = tmp_path / "p.json", tmp_path / "keys.json"
    assert _cli("audit", "prove", "1", "--data", data, "--out", str(proof)).exit_code == 0
    assert _cli("audit", "log-keys", "--data", data, "--out", str(keys_json)).exit_code == 0
    doc = json.loads(keys_json.read_text())
    trusted = load_public_key(old_pem.read_bytes())

    # An attacker's own key pair, introduced by a statement the attacker signs with both of its keys:
    # no trusted key takes part, so it adds nothing.
    evil_old, evil_new = LogKey.generate(), LogKey.generate()
    evil_head = evil_old.sign(1, 1, b"\0" * 32)
    forged = rotation_statement(evil_old, evil_new, evil_head)
    assert set(trusted_keys(trusted, [*doc["rotations"], forged])) == set(trusted_keys(trusted, doc["rotations"]))
    # A real statement whose new key was swapped for the attacker's: its signatures no longer hold.
    swapped = dict(doc["rotations"][0], new_public_key=evil_new.public_pem().decode(), new_log_id=evil_new.log_id)
    try:
        verify_rotation(swapped)
    except ProofError as exc:
        assert "signed by both" in str(exc)
    else:
        raise AssertionError("a rotation statement with a swapped key was accepted")
    assert evil_new.log_id not in trusted_keys(trusted, [swapped])
    # A proof whose head the attacker re-signed with its key is refused even with the chain.
    forged_proof = json.loads(proof.read_text())
    th = forged_proof["tree_head"]
    root = base64.b64decode(th["root_hash"])
    forged_proof["tree_head"] = evil_new.sign(th["tree_size"], th["timestamp"], root).as_dict()
    keys = trusted_keys(trusted, [*doc["rotations"], forged, swapped])
    try:
        verify_proof_document(forged_proof, keys)
    except ProofError as exc:
        assert "unknown log key" in str(exc)
    else:
        raise AssertionError("a proof signed by an unknown key was accepted")
    assert verify_proof_document(json.loads(proof.read_text()), keys)["ok"] is True  # control

    # Inside the hub: a checkpoint signed by a key outside the chain fails `audit verify`, naming it,
    # even when the attacker also planted its key and a (self-signed) rotation in the catalog.
    hub.state.catalog.audit.checkpoint()
    size = hub.state.catalog.audit.head_seq()
    _ingest(hub, 1)
    bad = evil_new.sign(size + 1, 2, hub.state.catalog.audit.latest_checkpoint().root_hash)  # type: ignore[union-attr]
    con = sqlite3.connect(hub.data_dir / "catalog.sqlite3")
    con.execute(
        "INSERT INTO audit_checkpoints (tree_size, timestamp, root_hash, log_id, signature) VALUES (?,?,?,?,?)",
        (bad.tree_size, bad.timestamp, bad.root_hash.hex(), bad.log_id, bad.signature.hex()),
    )
    con.execute(
        "INSERT INTO audit_log_keys (log_id, public_key, created_at, rotation) VALUES (?,?,?,?)",
        (evil_new.log_id, evil_new.public_pem().decode(), "2026-01-01 00:00:00", json.dumps(forged)),
    )
    con.commit()
    con.close()
    report = hub.state.catalog.audit.verify()
    assert not report.ok and "unknown log key" in report.reason and f"size {size + 1}" in report.reason
    assert isinstance(_cli("audit", "verify", "--data", data).exception, IntegrityError)


def test_an_admin_rotates_through_the_api_and_nobody_else_can(hub: Hub, tmp_path: Path) -> None:
    """`POST /api/v1/audit/log-key/rotate`: the same rotation as the CLI, by an admin only (auditors read the
    log but change nothing), audited under the admin; the hub signs its next checkpoint with the new key
    without a restart, and the statement verifies."""
    _ingest(hub, 2)
    audit = hub.state.catalog.audit
    old_id = audit.log_key.log_id  # type: ignore[union-attr]
    key_file = hub.data_dir / "secrets" / "audit-log.ed25519"
    before = key_file.read_bytes()
    path = "/api/v1/audit/log-key/rotate"
    for who in ("auditor", "researcher", "clinician", "site_a"):
        r = hub.client.post(path, headers=hub.auth(who))
        assert r.status_code == 403, (who, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert hub.client.post(path).status_code == 401
    assert key_file.read_bytes() == before and audit.current_key().log_id == old_id  # type: ignore[union-attr]

    r = hub.client.post(path, headers=hub.auth("admin"))
    assert r.status_code == 200, r.text
    statement = r.json()
    assert statement["old_log_id"] == old_id and statement["new_log_id"] != old_id
    verify_rotation(statement)
    assert key_file.read_bytes() != before and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert not key_file.with_name(key_file.name + ".new").exists()
    _ingest(hub, 1)
    assert audit.checkpoint().log_id == statement["new_log_id"]
    assert audit.verify().ok
    events = audit.page(0, 1000, "audit.log-key.rotate")
    admin_token_id = hub.tokens["admin"].removeprefix("mct_").split(".")[0]
    assert len(events) == 1 and events[0]["subject"] == f"admin:{admin_token_id}"
    assert json.loads(events[0]["detail"])["new_log_id"] == statement["new_log_id"]
    # The auditor's export shows the chain; a second rotation continues it.
    doc = hub.client.get("/api/v1/audit/log-keys", headers=hub.auth("auditor")).json()
    assert doc["current"] == statement["new_log_id"] and doc["rotations"] == [statement]
    again = hub.client.post(path, headers=hub.auth("admin"))
    assert again.status_code == 200 and again.json()["old_log_id"] == statement["new_log_id"]
    trusted = load_public_key(statement["old_public_key"].encode())
    chain = hub.client.get("/api/v1/audit/log-keys", headers=hub.auth("auditor")).json()["rotations"]
    assert again.json()["new_log_id"] in set(trusted_keys(trusted, chain))  # reachable from the first key
