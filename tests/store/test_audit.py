"""The stored audit chain: it verifies, and tampering with the rows (byte edits, deletions) is caught."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import threading
from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from medcloud.security.audit import GENESIS, HEAD_FILE, AuditSeal, chain_hash
from medcloud.store import Catalog, Database
from medcloud.store.tables import audit_events
from tests.hub.conftest import Hub, deidentified_dicom


def test_chain_verifies_and_a_changed_byte_is_named(hub: Hub) -> None:
    for _ in range(3):
        hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a"))
    ok = hub.client.get("/api/v1/audit/verify", headers=hub.auth("auditor")).json()
    assert ok["ok"] and ok["checked"] >= 11
    db = hub.data_dir / "catalog.sqlite3"
    con = sqlite3.connect(db)
    # The database refuses edits outright...
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE audit_events SET outcome='stored' WHERE seq=5")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM audit_events WHERE seq=5")
    # ...so an attacker with file access drops the trigger and changes one byte.
    con.execute("DROP TRIGGER audit_events_no_update")
    subject = con.execute("SELECT subject FROM audit_events WHERE seq=7").fetchone()[0]
    con.execute("UPDATE audit_events SET subject=? WHERE seq=7", (subject[:-1] + ("x" if subject[-1] != "x" else "y"),))
    con.commit()
    con.close()
    bad = hub.client.get("/api/v1/audit/verify", headers=hub.auth("auditor")).json()
    assert bad == {**bad, "ok": False, "first_bad_seq": 7}
    assert "altered" in bad["reason"]
    cli = subprocess.run(
        [sys.executable, "-m", "medcloud.cli", "audit", "verify", "--data", str(hub.data_dir)],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 7
    assert "event 7" in cli.stderr and len(cli.stderr.strip().splitlines()) == 1


def test_deleted_event_is_caught(hub: Hub) -> None:
    for _ in range(3):
        hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a"))
    con = sqlite3.connect(hub.data_dir / "catalog.sqlite3")
    con.execute("DROP TRIGGER audit_events_no_delete")
    con.execute("DELETE FROM audit_events WHERE seq=4")
    con.commit()
    con.close()
    report = hub.state.catalog.audit.verify()
    assert not report.ok and report.first_bad_seq == 4 and "missing" in report.reason


@pytest.mark.postgres
def test_postgres_catalog_end_to_end(pg_hub: Hub) -> None:
    hub = pg_hub
    r = hub.client.post("/api/v1/ingest", content=deidentified_dicom(modality="MR"), headers=hub.auth("site_a"))
    assert r.status_code == 201, r.text
    again = hub.client.post("/api/v1/ingest", content=b"", headers=hub.auth("site_a"))
    assert again.status_code == 400
    studies = hub.client.get("/api/v1/studies?modality=MR", headers=hub.auth("researcher")).json()
    assert studies["total"] == 1 and studies["items"][0]["modalities"] == ["MR"]
    report = hub.client.get("/api/v1/audit/verify", headers=hub.auth("auditor")).json()
    assert report["ok"] and report["checked"] >= 10
    eng = sa.create_engine(hub.state.catalog.url)
    with eng.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="append-only"):
        conn.exec_driver_sql("UPDATE audit_events SET outcome='x' WHERE seq=1")
    eng.dispose()


def _sqlite(hub: Hub) -> sqlite3.Connection:
    con = sqlite3.connect(hub.data_dir / "catalog.sqlite3")
    con.execute("DROP TRIGGER audit_events_no_update")
    con.execute("DROP TRIGGER audit_events_no_delete")
    return con


def _rehash_from(con: sqlite3.Connection, seq: int) -> None:
    """What an attacker with database access does after an edit: recompute every hash from `seq` on."""
    cols = ["seq", "ts", "subject", "action", "resource", "outcome", "client", "detail", "prev_hash", "hash"]
    query = "SELECT seq, ts, subject, action, resource, outcome, client, detail, prev_hash, hash FROM audit_events"
    rows = [dict(zip(cols, r, strict=True)) for r in con.execute(query + " ORDER BY seq")]
    prev = rows[seq - 2]["hash"] if seq > 1 else GENESIS
    for row in rows[seq - 1 :]:
        new = chain_hash(prev, row)
        con.execute("UPDATE audit_events SET prev_hash=?, hash=? WHERE seq=?", (prev, new, row["seq"]))
        prev = new


def _verify(hub: Hub) -> tuple[dict, subprocess.CompletedProcess[str]]:
    api = hub.client.get("/api/v1/audit/verify", headers=hub.auth("auditor")).json()
    cli = subprocess.run(
        [sys.executable, "-m", "medcloud.cli", "audit", "verify", "--data", str(hub.data_dir)],
        capture_output=True,
        text=True,
    )
    return api, cli


def _ingest(hub: Hub, n: int) -> None:
    for _ in range(n):
        r = hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a"))
        assert r.status_code == 201


def test_edited_event_with_recomputed_hashes_is_caught(hub: Hub) -> None:
    """Issue 10 (12): the chain had no key, so an edit followed by recomputed hashes passed verify."""
    _ingest(hub, 3)
    api, cli = _verify(hub)
    assert api["ok"] and cli.returncode == 0, (api, cli.stderr)
    con = _sqlite(hub)
    con.execute("UPDATE audit_events SET outcome='refused:403:forbidden' WHERE seq=7")
    _rehash_from(con, 7)
    con.commit()
    con.close()
    api, cli = _verify(hub)
    assert api == {**api, "ok": False, "first_bad_seq": 7} and "MAC" in api["reason"], api
    assert cli.returncode == 7 and "event 7" in cli.stderr


def test_edited_event_with_recomputed_hashes_and_macs_removed_is_caught(hub: Hub) -> None:
    """Removing the MACs along with the recomputed hashes does not pass for a chain that predates the key."""
    _ingest(hub, 3)
    con = _sqlite(hub)
    con.execute("UPDATE audit_events SET subject='admin:someone-else' WHERE seq=5")
    _rehash_from(con, 5)
    con.execute("UPDATE audit_events SET mac=NULL")
    con.commit()
    con.close()
    api, cli = _verify(hub)
    assert not api["ok"] and cli.returncode == 7, api


def test_truncated_newest_events_are_caught(hub: Hub) -> None:
    """Issue 10 (12): deleting the newest events left a shorter chain that still verified."""
    _ingest(hub, 3)
    head = hub.state.catalog.audit.head_seq()
    con = _sqlite(hub)
    con.execute("DELETE FROM audit_events WHERE seq > ?", (head - 3,))
    con.commit()
    con.close()
    api, cli = _verify(hub)
    assert api == {**api, "ok": False, "first_bad_seq": head - 2, "sealed_seq": head}, api
    assert "missing" in api["reason"]
    assert cli.returncode == 7 and f"event {head - 2}" in cli.stderr


def test_the_key_lives_outside_the_database_and_is_private(hub: Hub) -> None:
    secrets = hub.data_dir / "secrets"
    assert stat.S_IMODE((secrets / "audit.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert len((secrets / "audit.key").read_bytes()) == 32
    with hub.state.catalog.read() as conn:
        assert all(conn.execute(sa.text("SELECT mac IS NOT NULL FROM audit_events")).scalars())


def test_verify_without_the_key_does_not_pass_a_sealed_chain(hub: Hub) -> None:
    _ingest(hub, 1)
    key = hub.data_dir / "secrets" / "audit.key"
    key.rename(key.with_name("moved.key"))
    _, cli = _verify(hub)
    assert cli.returncode == 7 and "no audit key" in cli.stderr
    assert not key.exists()  # a reader never makes up a key


def test_a_chain_from_before_the_key_migrates_and_stays_checked(tmp_path: Path) -> None:
    """A database at revision 0001 (no MAC column) with events: migrated, sealed from then on, verified."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    db = Database(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("medcloud.store") / "migrations"))
    with db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        prev = GENESIS
        for seq in range(1, 4):  # events as the code before the key wrote them
            row = {"seq": seq, "ts": f"2026-11-0{seq}T00:00:00", "subject": "cli", "action": "token.create",
                   "resource": f"token/{seq}", "outcome": "ok", "client": "", "detail": "{}"}  # fmt: skip
            row["prev_hash"], row["hash"] = prev, chain_hash(prev, row)
            conn.execute(audit_events.insert().values(**row))
            prev = row["hash"]
    db.dispose()
    seal = AuditSeal(tmp_path / "secrets")
    cat = Catalog(url, seal=seal)
    cat.migrate()
    assert cat.audit.verify().ok
    cat.audit.record(subject="cli", action="site.update", resource="site/x", outcome="ok")
    cat.audit.record(subject="cli", action="site.update", resource="site/y", outcome="ok")
    report = cat.audit.verify()
    assert report.ok and report.checked == 5 and report.sealed_seq == 5, report
    head, _ = seal.read_head()
    assert head is not None and head.since == 4
    # Rewriting history before the key, hashes recomputed to the end, breaks the first sealed event.
    with cat.db.write_engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER audit_events_no_update")
    con = sqlite3.connect(tmp_path / "old.sqlite3")
    con.execute("UPDATE audit_events SET subject='someone-else' WHERE seq=2")
    _rehash_from(con, 2)
    con.commit()
    con.close()
    report = cat.audit.verify()
    assert not report.ok and report.first_bad_seq == 4 and "MAC" in report.reason, report
    cat.dispose()


@pytest.mark.postgres
def test_postgres_truncation_and_rehash_are_caught(pg_hub: Hub) -> None:
    hub = pg_hub
    _ingest(hub, 2)
    head = hub.state.catalog.audit.head_seq()
    eng = sa.create_engine(hub.state.catalog.url)
    with eng.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        conn.execute(sa.text("DELETE FROM audit_events WHERE seq > :n"), {"n": head - 2})
    report = hub.client.get("/api/v1/audit/verify", headers=hub.auth("auditor")).json()
    assert report == {**report, "ok": False, "first_bad_seq": head - 1, "sealed_seq": head}, report
    with eng.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_events SET mac = NULL WHERE seq = 3")
    report = hub.client.get("/api/v1/audit/verify", headers=hub.auth("auditor")).json()
    assert report == {**report, "ok": False, "first_bad_seq": 3}, report
    eng.dispose()


def test_two_writers_sharing_the_folder_keep_one_sealed_head(tmp_path: Path) -> None:
    """Two hub processes (here two catalogs, each with its own locks and seal) advance one head in turn."""
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    cats = [Catalog(url, seal=AuditSeal(tmp_path / "secrets")) for _ in range(2)]
    cats[0].migrate()

    def write(i: int) -> None:
        for j in range(25):
            cats[i % 2].audit.record(subject=f"w{i}", action="test", resource=f"r/{j}", outcome="ok")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = cats[1].audit.verify()
    assert report.ok and report.checked == 100 and report.sealed_seq == 100, report
    for cat in cats:
        cat.dispose()


def test_a_seal_rereads_a_head_another_process_advanced(tmp_path: Path) -> None:
    """Each seal remembers the head file's bytes it last wrote; bytes another process wrote since are read
    and checked again, so an older head never overwrites a newer one (and a forged slot is not believed)."""
    a, b = AuditSeal(tmp_path / "secrets"), AuditSeal(tmp_path / "secrets")
    a.advance(1, "1" * 64, first_sealed=1)
    a.advance(2, "2" * 64, first_sealed=1)
    b.advance(5, "5" * 64, first_sealed=1)  # another process got further (slot 1)
    a.advance(3, "3" * 64, first_sealed=1)  # older than the file's head: ignored, slot 1 keeps 5
    head, _ = a.read_head()
    assert head is not None and (head.seq, head.hash) == (5, "5" * 64)
    # A slot written without the key (seq 9, a made-up MAC) is not taken as the head by the next advance.
    path = tmp_path / "secrets" / HEAD_FILE
    raw = bytearray(path.read_bytes())
    forged = json.dumps({"since": 1, "seq": 9, "hash": "9" * 64, "mac": "0" * 64}).encode().ljust(255) + b"\n"
    raw[0:256] = forged
    path.write_bytes(bytes(raw))
    a.advance(6, "6" * 64, first_sealed=1)
    head, _ = a.read_head()
    assert head is not None and (head.seq, head.hash) == (6, "6" * 64)
