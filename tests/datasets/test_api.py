"""The datasets and cohorts API: freeze, list, show, manifest, files; grants, audit, problem details."""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa

from medcloud.store.tables import audit_events
from tests.hub.conftest import Hub


def _freeze(hub: Hub, who: str = "researcher", **body: object) -> object:
    payload: dict[str, object] = {"name": "lung-ct", "query": [{"modality": "CT"}], "seed": 1}
    payload.update(body)
    return hub.client.post("/api/v1/datasets", json=payload, headers=hub.auth(who))


def _actions(hub: Hub) -> list[tuple[str, str]]:
    with hub.state.catalog.read() as conn:
        return [(r.action, r.outcome) for r in conn.execute(sa.select(audit_events).order_by(audit_events.c.seq))]


def test_freeze_twice_gives_one_version_and_is_audited(filled: Hub) -> None:
    first = _freeze(filled)
    assert first.status_code == 201, first.text  # type: ignore[attr-defined]
    v = first.json()  # type: ignore[attr-defined]
    assert v["file_count"] == 12 and v["projects"] == ["lung"] and v["status"] == "active"
    again = _freeze(filled)
    assert again.status_code == 200 and again.json()["id"] == v["id"]  # type: ignore[attr-defined]
    assert ("dataset.freeze", "created") in _actions(filled) and ("dataset.freeze", "unchanged") in _actions(filled)
    listed = filled.client.get("/api/v1/datasets", headers=filled.auth("researcher")).json()["items"]
    assert [x["id"] for x in listed] == [v["id"]]
    shown = filled.client.get(f"/api/v1/datasets/{v['id']}", headers=filled.auth("researcher")).json()
    assert shown["split_counts"] == v["split_counts"] and sum(shown["split_counts"].values()) == 12


def test_manifest_hashes_to_the_id_and_files_are_served_by_index_and_uid(filled: Hub) -> None:
    v = _freeze(filled).json()  # type: ignore[attr-defined]
    r = filled.client.get(f"/api/v1/datasets/{v['id']}/manifest", headers=filled.auth("researcher"))
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == v["id"]
    lines = [json.loads(x) for x in r.content.decode().splitlines()]
    header, files = lines[0], lines[1:]
    assert header["query"] == [{"kind": "image", "modality": "CT"}] and len(files) == 12
    patients: dict[str, set[str]] = {}
    for f in files:
        patients.setdefault(f["patient"], set()).add(f["split"])
    assert len(patients) == 6 and all(len(s) == 1 for s in patients.values())
    for ref in ("3", files[3]["sop_uid"]):
        got = filled.client.get(f"/api/v1/datasets/{v['id']}/files/{ref}/file", headers=filled.auth("researcher"))
        assert got.status_code == 200, got.text
        assert hashlib.sha256(got.content).hexdigest() == files[3]["sha256"] == got.headers["x-content-sha256"]
    assert _actions(filled).count(("dataset.file.read", "ok")) == 2
    for ref in ("99", "9" * 40, "²", "1.2.3"):
        missing = filled.client.get(f"/api/v1/datasets/{v['id']}/files/{ref}/file", headers=filled.auth("researcher"))
        assert missing.status_code == 404, (ref, missing.text)
        assert missing.headers["content-type"] == "application/problem+json"


def test_other_project_cannot_see_or_fetch(filled: Hub) -> None:
    v = _freeze(filled).json()  # type: ignore[attr-defined]
    brain = filled.auth("researcher_brain")
    assert filled.client.get("/api/v1/datasets", headers=brain).json()["items"] == []
    for path in ("", "/manifest", "/files/0/file"):
        r = filled.client.get(f"/api/v1/datasets/{v['id']}{path}", headers=brain)
        assert r.status_code == 404, (path, r.text)
    # Freezing another project's data, by query or by its cohort, is refused.
    assert _freeze(filled, who="researcher_brain", projects=["lung"]).status_code == 403  # type: ignore[attr-defined]
    assert ("dataset.file.read", "refused:404:not-found") in [
        (a, o) for a, o in _actions(filled) if a == "dataset.file.read"
    ]
    saved = filled.client.post(
        "/api/v1/cohorts", json={"name": "ct", "query": [{"modality": "CT"}]}, headers=filled.auth("researcher")
    )
    assert saved.status_code == 201, saved.text
    assert filled.client.get("/api/v1/cohorts/ct", headers=brain).status_code == 404
    assert filled.client.get("/api/v1/cohorts", headers=brain).json()["items"] == []
    assert _freeze(filled, who="researcher_brain", query=None, cohort="ct").status_code == 404  # type: ignore[attr-defined]
    # The brain researcher's own freeze sees only brain.
    own = _freeze(filled, who="researcher_brain", name="brain-mr", query=[{"modality": "MR"}])
    assert own.status_code == 201 and own.json()["file_count"] == 2  # type: ignore[attr-defined]


def test_roles_and_tokens(filled: Hub) -> None:
    assert _freeze(filled, who="clinician").status_code == 403  # type: ignore[attr-defined]
    assert _freeze(filled, who="admin").status_code == 403  # type: ignore[attr-defined]
    assert _freeze(filled, who="site_a").status_code == 403  # type: ignore[attr-defined]
    assert filled.client.post("/api/v1/datasets", json={"name": "x", "query": []}).status_code == 401
    assert filled.client.get("/api/v1/datasets").status_code == 401
    refused = [o for a, o in _actions(filled) if a == "POST /api/v1/datasets"]
    assert refused.count("refused:403:forbidden") == 3 and "refused:401:unauthenticated" in refused


def test_bad_input_is_a_problem_not_a_500(filled: Hub) -> None:
    cases = [
        {"split": {"train": 0.9, "test": 0.2}},
        {"query": [{"colour": "red"}]},
        {"query": [{"kind": "finding", "code": "unicorn", "status": "present"}]},
        {"query": [{"kind": "finding", "code": "nodule", "status": "maybe"}]},
        {"query": [{"kind": "finding", "code": "nodule", "status": "present"}]},  # no report: matches nothing
        {"cohort": "ct"},  # and a query: exactly one is allowed
        {"query": None},  # neither
        {"seed": -3},
        {"name": ""},
        {"query": [{"modality": "XA"}]},  # matches nothing
    ]
    for body in cases:
        r = _freeze(filled, **body)
        assert r.status_code == 400, (body, r.text)  # type: ignore[attr-defined]
        assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    assert filled.client.get("/api/v1/datasets/not-an-id", headers=filled.auth("researcher")).status_code == 400
    assert filled.client.get("/api/v1/datasets", headers=filled.auth("researcher")).json()["items"] == []


def test_cohort_save_show_and_freeze_from_it(filled: Hub) -> None:
    h = filled.auth("researcher")
    body = {"name": "ct-young", "query": [{"modality": "CT"}, {"date_to": "2013-12-31"}]}
    assert filled.client.post("/api/v1/cohorts", json=body, headers=h).status_code == 201
    assert filled.client.post("/api/v1/cohorts", json=body, headers=h).status_code == 200
    changed = {**body, "query": [{"modality": "MR"}]}
    assert filled.client.post("/api/v1/cohorts", json=changed, headers=h).status_code == 409
    shown = filled.client.get("/api/v1/cohorts/ct-young", headers=h).json()
    assert shown["matches"] == 8 and shown["projects"] == ["lung"]  # four studies dated 2010-2013
    v = _freeze(filled, query=None, cohort="ct-young", name="young").json()  # type: ignore[attr-defined]
    assert v["file_count"] == 8 and v["cohort"] == "ct-young"
    direct = _freeze(filled, query=body["query"], name="young").json()  # type: ignore[attr-defined]
    assert direct["id"] != v["id"]  # the cohort's name is part of what was frozen
    assert ("cohort.save", "created") in _actions(filled)
    assert filled.client.post("/api/v1/cohorts", json=body, headers=filled.auth("clinician")).status_code == 403


def test_withdrawn_version_refuses_files_with_410(filled: Hub) -> None:
    v = _freeze(filled).json()  # type: ignore[attr-defined]
    manifest = filled.client.get(f"/api/v1/datasets/{v['id']}/manifest", headers=filled.auth("researcher")).content
    sop = json.loads(manifest.decode().splitlines()[1])["sop_uid"]
    cat = filled.state.catalog
    with cat.write() as conn:
        assert cat.datasets.remove_instance(conn, sop, "consent withdrawn") == [v["id"]]
    r = filled.client.get(f"/api/v1/datasets/{v['id']}/files/1/file", headers=filled.auth("researcher"))
    assert r.status_code == 410 and r.json()["type"].endswith("/dataset-withdrawn")
    after = filled.client.get(f"/api/v1/datasets/{v['id']}/manifest", headers=filled.auth("researcher")).content
    assert after == manifest
    shown = filled.client.get(f"/api/v1/datasets/{v['id']}", headers=filled.auth("researcher")).json()
    assert shown["status"] == "withdrawn" and "consent withdrawn" in shown["withdrawn_reason"]
