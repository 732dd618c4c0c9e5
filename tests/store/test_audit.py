"""The stored audit chain: it verifies, and tampering with the rows (byte edits, deletions) is caught."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
import sqlalchemy as sa

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
