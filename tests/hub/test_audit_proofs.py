"""Signed Merkle checkpoints of the audit log: a hospital proves its events offline with the public key
alone, and an altered, removed or reordered past event, a forked log or a forged head is refused."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medcloud.cli import app
from medcloud.config import load_settings
from medcloud.errors import IntegrityError
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.audit import GENESIS, chain_hash
from medcloud.security.merkle import ProofError, load_public_key, verify_proof_document
from medcloud.security.tokens import issue_token
from tests.hub.conftest import Hub

runner = CliRunner()


def _ingest(hub: Hub, n: int) -> None:
    """`n` audited state changes through the API (cheap ones: a site's collection target)."""
    for i in range(n):
        r = hub.client.put("/api/v1/sites/site-a", json={"target_cases": i + 1}, headers=hub.auth("admin"))
        assert r.status_code == 200, r.text


def _rewrite(db: Path, seq: int, **changes: str) -> None:
    """What an attacker with the database file and the audit key does: edit a row, recompute every hash."""
    from medcloud.security.audit import AuditSeal

    seal = AuditSeal(db.parent / "secrets")
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    con.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
    for k, v in changes.items():
        con.execute(f"UPDATE audit_events SET {k}=? WHERE seq=?", (v, seq))  # noqa: S608 - test-chosen names
    prev = GENESIS
    for row in con.execute("SELECT * FROM audit_events ORDER BY seq").fetchall():
        h = chain_hash(prev, dict(row))
        con.execute("UPDATE audit_events SET prev_hash=?, hash=?, mac=? WHERE seq=?",
                    (prev, h, seal.event_mac(h), row["seq"]))  # fmt: skip
        prev = h
        last = int(row["seq"])
    con.commit()
    con.close()
    (db.parent / "secrets" / "audit.head").unlink()  # and reseal the head over the rewritten chain
    seal.advance(last, prev, first_sealed=1)


def test_a_hospital_proves_its_event_offline_and_the_log_only_grew(hub: Hub, tmp_path: Path) -> None:
    _ingest(hub, 3)
    auditor = hub.auth("auditor")
    pem = hub.client.get("/api/v1/audit/log-key", headers=auditor)
    assert pem.status_code == 200 and pem.text.startswith("-----BEGIN PUBLIC KEY-----")
    key = load_public_key(pem.content)
    saved = hub.client.get("/api/v1/audit/checkpoints/latest", headers=auditor).json()  # the hospital keeps it
    _ingest(hub, 2)
    event = hub.client.get("/api/v1/audit?limit=1000", headers=auditor).json()["items"][-1]
    proof = hub.client.get(f"/api/v1/audit/proof/{event['seq']}?since_size={saved['tree_size']}", headers=auditor)
    assert proof.status_code == 200
    doc = proof.json()
    assert doc["event"]["seq"] == event["seq"] and doc["tree_head"]["tree_size"] >= event["seq"]
    assert doc["consistency"]["from"] == saved
    summary = verify_proof_document(doc, key)
    assert summary == {**summary, "ok": True, "event_seq": event["seq"], "consistent_since": saved["tree_size"]}
    # Offline, with the CLI and the public key only.
    (tmp_path / "proof.json").write_text(json.dumps(doc))
    (tmp_path / "log.pem").write_bytes(pem.content)
    (tmp_path / "sth.json").write_text(json.dumps(saved))
    ok = runner.invoke(app, ["audit", "verify-proof", str(tmp_path / "proof.json"), "--key", str(tmp_path / "log.pem"),
                             "--since", str(tmp_path / "sth.json")])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    # The event as the hospital recorded it differs from what the log holds: refused.
    edited = json.loads(json.dumps(doc))
    edited["event"]["outcome"] = "refused:403:forbidden"
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    bad = runner.invoke(
        app, ["audit", "verify-proof", str(tmp_path / "edited.json"), "--key", str(tmp_path / "log.pem")]
    )
    assert isinstance(bad.exception, IntegrityError) and "not in this log" in str(bad.exception)
    # A proof whose tree head someone re-signed with another key is refused.
    (tmp_path / "other.pem").write_bytes(pem.content.replace(b"A", b"B", 1))
    forged = dict(doc, tree_head=dict(doc["tree_head"], signature=doc["tree_head"]["signature"][::-1]))
    with pytest.raises(ProofError):
        verify_proof_document(forged, key)
    # Only auditors read proofs.
    assert hub.client.get("/api/v1/audit/proof/1", headers=hub.auth("researcher")).status_code == 403
    assert hub.client.get("/api/v1/audit/checkpoints/latest").status_code == 401
    assert hub.client.get("/api/v1/audit/proof/999999", headers=auditor).status_code == 404


def test_removed_or_reordered_events_and_a_rewritten_log_are_caught(hub: Hub) -> None:
    _ingest(hub, 4)
    audit = hub.state.catalog.audit
    saved = audit.checkpoint()  # what a hospital keeps
    assert audit.verify().checkpoints == 1
    db = hub.data_dir / "catalog.sqlite3"
    # An attacker with the database file and the audit MAC key removes the newest event and reseals...
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER audit_events_no_delete")
    con.execute("DELETE FROM audit_events WHERE seq=?", (saved.tree_size,))
    con.commit()
    con.close()
    _rewrite(db, 1)
    report = audit.verify()
    assert not report.ok and f"checkpoint at size {saved.tree_size}" in report.reason and "removed" in report.reason
    # ...then swaps two events, recomputing every hash and MAC: the chain and the seal agree again,
    # only the signed checkpoint does not.
    con = sqlite3.connect(db)
    a, b = (dict(zip(("subject", "resource"), r, strict=True)) for r in
            con.execute("SELECT subject, resource FROM audit_events WHERE seq IN (2, 3) ORDER BY seq"))  # fmt: skip
    con.close()
    _rewrite(db, 2, **b)
    _rewrite(db, 3, **a)
    con = sqlite3.connect(db)
    con.execute("DELETE FROM audit_checkpoints")  # and hides the evidence: the local checks now pass
    con.commit()
    con.close()
    fresh = HubState.open(load_settings(data_dir=hub.data_dir))  # a new process: no cached leaves
    try:
        assert fresh.catalog.audit.verify().ok
        cli = runner.invoke(app, ["audit", "verify", "--data", str(hub.data_dir)])
        assert cli.exit_code == 0, cli.output
        for _ in range(2):
            issue_token(fresh.catalog, role="auditor")
        # A hospital holding the earlier head sees that the newly signed tree does not extend it: a fork.
        doc = fresh.catalog.audit.prove(fresh.catalog.audit.head_seq(), since=saved)
        assert doc["tree_head"]["tree_size"] > saved.tree_size
        with pytest.raises(ProofError, match="forked or rewritten"):
            verify_proof_document(doc, fresh.catalog.audit.log_key.public_key)  # type: ignore[union-attr]
    finally:
        fresh.close()


def test_an_altered_event_fails_verify_even_with_the_mac_key(hub: Hub) -> None:
    _ingest(hub, 2)
    head = hub.state.catalog.audit.checkpoint()
    _rewrite(hub.data_dir / "catalog.sqlite3", 3, outcome="refused:403:forbidden")
    report = hub.state.catalog.audit.verify()
    assert not report.ok and f"checkpoint at size {head.tree_size}" in report.reason and "altered" in report.reason
    cli = runner.invoke(app, ["audit", "verify", "--data", str(hub.data_dir)])
    assert isinstance(cli.exception, IntegrityError)


def test_cli_checkpoint_prove_and_export(hub: Hub, tmp_path: Path) -> None:
    _ingest(hub, 2)
    data = str(hub.data_dir)
    sth = runner.invoke(app, ["audit", "checkpoint", "--data", data, "--out", str(tmp_path / "sth.json")])
    assert sth.exit_code == 0, sth.output
    assert runner.invoke(app, ["audit", "log-key", "--data", data, "--out", str(tmp_path / "k.pem")]).exit_code == 0
    _ingest(hub, 1)
    seq = hub.state.catalog.audit.head_seq()
    out = tmp_path / "proof.json"
    got = runner.invoke(app, ["audit", "prove", str(seq), "--data", data, "--since", str(tmp_path / "sth.json"),
                              "--out", str(out)])  # fmt: skip
    assert got.exit_code == 0, got.output
    ok = runner.invoke(app, ["audit", "verify-proof", str(out), "--key", str(tmp_path / "k.pem"),
                             "--since", str(tmp_path / "sth.json")])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    # A saved head that the proof does not start from is refused.
    other = json.loads((tmp_path / "sth.json").read_text())
    other["tree_size"] += 1
    (tmp_path / "other.json").write_text(json.dumps(other))
    bad = runner.invoke(app, ["audit", "verify-proof", str(out), "--key", str(tmp_path / "k.pem"),
                              "--since", str(tmp_path / "other.json")])  # fmt: skip
    assert isinstance(bad.exception, IntegrityError)


def test_the_hub_signs_checkpoints_by_itself(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "hub", audit_checkpoint_every=3, audit_checkpoint_poll_seconds=0.05)
    state = HubState.open(settings)
    from fastapi.testclient import TestClient

    try:
        for _ in range(3):
            issue_token(state.catalog, role="auditor")
        with TestClient(create_app(settings, state=state)):
            deadline = time.monotonic() + 10
            while state.catalog.audit.latest_checkpoint() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        head = state.catalog.audit.latest_checkpoint()
        assert head is not None and head.tree_size == 3
        head.verify(state.catalog.audit.log_key.public_key)  # type: ignore[union-attr]
    finally:
        state.close()
