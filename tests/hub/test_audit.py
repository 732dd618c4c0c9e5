"""The audit trail at the hub's edge: one event per state change and byte read, refusals included."""

from __future__ import annotations

from tests.hub.conftest import Hub, deidentified_dicom


def _events(hub: Hub, action: str | None = None) -> list[dict]:
    q = f"?limit=1000{'&action=' + action if action else ''}"
    r = hub.client.get(f"/api/v1/audit{q}", headers=hub.auth("auditor"))
    assert r.status_code == 200
    return r.json()["items"]


def test_state_changes_and_byte_reads_are_audited(hub: Hub) -> None:
    n0 = len(_events(hub))
    r = hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a"))
    sop = r.json()["sop_instance_uid"]
    ev = _events(hub)[-1]
    assert ev["action"] == "ingest" and ev["outcome"] == "stored" and ev["resource"] == f"instance/{sop}"
    assert ev["subject"].startswith("site@site-a:") and ev["client"] == "127.0.0.1"
    hub.client.get(f"/api/v1/instances/{sop}/file", headers=hub.auth("researcher"))
    ev = _events(hub)[-1]
    assert ev["action"] == "instance.read" and ev["subject"].startswith("researcher:")
    # Refused attempts are recorded too: a clinician trying to read bytes, an anonymous upload.
    hub.client.get(f"/api/v1/instances/{sop}/file", headers=hub.auth("clinician"))
    ev = _events(hub)[-1]
    assert ev["outcome"].startswith("refused:403") and ev["subject"].startswith("clinician:")
    hub.client.post("/api/v1/ingest", content=b"x")
    ev = _events(hub)[-1]
    assert ev["outcome"].startswith("refused:401") and ev["subject"] == "anonymous"
    hub.client.put("/api/v1/sites/site-a", json={"target_cases": 5}, headers=hub.auth("admin"))
    assert _events(hub)[-1]["action"] == "site.update"
    assert len(_events(hub)) == n0 + 5
    # Plain metadata queries are not state changes and add no event.
    hub.client.get("/api/v1/studies", headers=hub.auth("researcher"))
    assert len(_events(hub)) == n0 + 5


def test_a_missing_blob_is_not_recorded_as_read(hub: Hub) -> None:
    r = hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a")).json()
    assert hub.state.blobs.remove(r["sha256"])
    got = hub.client.get(f"/api/v1/instances/{r['sop_instance_uid']}/file", headers=hub.auth("researcher"))
    assert got.status_code == 404 and got.headers["content-type"] == "application/problem+json"
    reads = [e for e in _events(hub) if e["resource"] == f"instance/{r['sop_instance_uid']}"]
    assert [e["outcome"] for e in reads] == ["stored", "refused:404:not-found"]
