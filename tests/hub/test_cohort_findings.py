"""Cohorts that combine image metadata and report findings: `pneumothorax=present AND NOT
pleural_effusion=present`, saved, counted, frozen; the same answer as the study search's `finding=`."""

from __future__ import annotations

from tests.hub.conftest import Hub
from tests.hub.test_reports import _post, _report, _upload_study


def test_cohort_with_finding_terms(hub: Hub) -> None:
    a = _upload_study(hub, "1.2.9.1", patient_id="P1")
    b = _upload_study(hub, "1.2.9.2", patient_id="P2")
    _upload_study(hub, "1.2.9.3", patient_id="P3")
    reports = [
        _report("1.2.9.1", "右気胸を認める。胸水なし。", patient_id="P1"),
        _report("1.2.9.2", "Right pneumothorax with pleural effusion.", patient_id="P2"),
        _report("1.2.9.3", "No pneumothorax.", patient_id="P3"),
    ]
    assert _post(hub, reports).status_code == 201
    h = hub.auth("researcher")
    query = [
        {"kind": "image", "modality": "ct"},
        {"kind": "finding", "code": "Pneumothorax", "status": "present"},
        {"kind": "finding", "code": "pleural_effusion", "status": "present", "negate": True},
    ]
    r = hub.client.post("/api/v1/cohorts", json={"name": "ptx-no-eff", "query": query}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["query"][1] == {"kind": "finding", "code": "pneumothorax", "status": "present"}
    got = hub.client.get("/api/v1/cohorts/ptx-no-eff", headers=h).json()
    assert got["matches"] == 1
    # Without the negated term both pneumothorax studies match.
    r = hub.client.post("/api/v1/cohorts", json={"name": "ptx", "query": query[:2]}, headers=h)
    assert hub.client.get("/api/v1/cohorts/ptx", headers=h).json()["matches"] == 2
    frozen = hub.client.post("/api/v1/datasets", json={"name": "ptx-v1", "cohort": "ptx-no-eff"}, headers=h)
    assert frozen.status_code == 201, frozen.text
    lines = hub.client.get(f"/api/v1/datasets/{frozen.json()['id']}/manifest", headers=h).text.splitlines()
    assert [line for line in lines[1:] if a in line] and not [line for line in lines[1:] if b in line]
    # A researcher of another project: the findings of lung reports do not exist for them.
    r = hub.client.post(
        "/api/v1/cohorts", json={"name": "ptx", "query": query[1:2]}, headers=hub.auth("researcher_brain")
    )
    assert r.status_code == 201
    brain = hub.client.get("/api/v1/cohorts/ptx?project=brain", headers=hub.auth("researcher_brain")).json()
    assert brain["matches"] == 0


def test_bad_finding_terms_are_refused(hub: Hub) -> None:
    h = hub.auth("researcher")
    for term in (
        {"kind": "finding", "code": "unicorn"},
        {"kind": "finding", "code": "nodule", "status": "maybe"},
        {"kind": "finding", "code": "nodule", "modality": "CT"},
        {"kind": "finding", "code": "nodule", "negate": "yes"},
        {"kind": "finding"},
        {"kind": "colour", "code": "red"},
    ):
        r = hub.client.post("/api/v1/cohorts", json={"name": "bad", "query": [term]}, headers=h)
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", term
    assert hub.client.get("/api/v1/cohorts", headers=h).json()["items"] == []
